"""Read labelled utterances from CSV, JSON Lines, Rasa NLU YAML or Rasa's JSON format.

Every problem is reported with the file and line it comes from; nothing is
dropped without being counted, in the `DataSummary` or in `NluData.lines()`.
A Rasa project's `data/` directory reads as Rasa reads it: the NLU parts are
taken, and stories, rules and the domain are named as skipped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.markup import (
    Entity,
    MarkupError,
    check_spans,
    entities_from_json,
    fold_whitespace,
    parse_markup,
)

OOS = "oos"
MAX_TEXT_CHARS = 10_000
MAX_FILE_BYTES = 200 * 1024 * 1024
_INTENT_NAME = re.compile(r"^[^\s\x00-\x1f]{1,128}$")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".yml": "yaml", ".yaml": "yaml", ".json": "rasa_json"}


class DataError(ValueError):
    """Bad training data; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    text: str
    intent: str
    source: str = ""  # "file:line", for messages
    entities: tuple[Entity, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The JSON Lines row that reads back as this example."""
        row: dict[str, object] = {"text": self.text, "intent": self.intent}
        if self.entities:
            row["entities"] = [e.to_json() for e in self.entities]
        return row

    @classmethod
    def from_json(cls, row: dict[str, object], where: str = "") -> Example:
        """A row of a JSON Lines file or a request body, checked as a file's are."""
        return _example(row.get("text"), row.get("intent"), where, row.get("entities"))


@dataclass
class DataSummary:
    """What was read, and everything that was set aside, with counts."""

    rows: int = 0
    kept: int = 0
    duplicates: int = 0  # same text, same intent: kept once
    conflicts: list[str] = field(default_factory=list)  # same text, several intents: dropped
    per_intent: dict[str, int] = field(default_factory=dict)
    set_aside: list[str] = field(default_factory=list)  # what training found no use for, said why

    def lines(self) -> list[str]:
        out = [f"{self.rows} rows read, {self.kept} examples kept, {len(self.per_intent)} intents"]
        if self.duplicates:
            out.append(f"{self.duplicates} exact duplicates kept once")
        if self.conflicts:
            out.append(
                f"{len(self.conflicts)} texts labelled with different intents were left out: "
                + "; ".join(self.conflicts[:5])
                + (" ..." if len(self.conflicts) > 5 else "")
            )
        return out + [f"not used: {item}" for item in self.set_aside]


@dataclass
class NluData:
    """What training files hold: the examples, and Rasa's entity synonyms, regexes, lookup
    tables and responses beside them; `skipped` names every part that is not NLU data."""

    examples: list[Example] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)  # text (casefolded) -> value
    regexes: dict[str, list[str]] = field(default_factory=dict)  # name -> patterns
    lookups: dict[str, list[str]] = field(default_factory=dict)  # name -> entries
    responses: dict[str, list[Any]] = field(default_factory=dict)  # utter_... -> variants
    skipped: list[str] = field(default_factory=list)
    _origin: dict[str, str] = field(default_factory=dict, repr=False)  # synonym -> where defined

    def add_synonym(self, text: str, value: str, where: str) -> None:
        key = text.strip().casefold()
        if key in self.synonyms and self.synonyms[key] != value:
            raise DataError(
                f"{where}: synonym {text!r} maps to {value!r} here"
                f" and to {self.synonyms[key]!r} at {self._origin[key]}"
            )
        self.synonyms[key] = value
        self._origin.setdefault(key, where)

    def extend(self, other: NluData) -> None:
        self.examples.extend(other.examples)
        for key, value in other.synonyms.items():
            self.add_synonym(key, value, other._origin.get(key, "?"))
        for mine, theirs in ((self.regexes, other.regexes), (self.lookups, other.lookups)):
            for name, items in theirs.items():
                mine[name] = _distinct(mine.get(name, []), items)
        self.responses.update(other.responses)
        self.skipped.extend(other.skipped)

    def rules(self) -> dict[str, Any]:
        """All but the examples, as JSON (a training job keeps it beside its examples)."""
        return {
            k: v
            for k, v in (
                ("synonyms", self.synonyms),
                ("regexes", self.regexes),
                ("lookups", self.lookups),
                ("responses", self.responses),
            )
            if v
        }

    @classmethod
    def from_rules(cls, rules: dict[str, Any], examples: Sequence[Example] = ()) -> NluData:
        return cls(
            list(examples),
            dict(rules.get("synonyms", {})),
            dict(rules.get("regexes", {})),
            dict(rules.get("lookups", {})),
            dict(rules.get("responses", {})),
        )

    def lines(self) -> list[str]:
        """What the summary of a training run says beside the examples' counts."""
        counts = [
            (len(self.synonyms), "entity synonyms"),
            (sum(map(len, self.regexes.values())), f"regex patterns ({len(self.regexes)} names)"),
            (sum(map(len, self.lookups.values())), f"lookup entries ({len(self.lookups)} tables)"),
            (len(self.responses), "responses"),
        ]
        out = (
            [", ".join(f"{n} {what}" for n, what in counts if n) + " read"]
            if any(n for n, _ in counts)
            else []
        )
        return out + [f"skipped {item}" for item in self.skipped]


def read_file(path: str | Path) -> list[Example]:
    """Examples of one file, in order, in the format its extension names."""
    return read_data([path]).examples


def read_files(paths: Iterable[str | Path]) -> list[Example]:
    return read_data(paths).examples


def read_data(paths: Iterable[str | Path]) -> NluData:
    """Files and directories (a Rasa project's `data/`), read in order; files in a directory
    in name order, those of no training format named as skipped."""
    data = NluData()
    for path in paths:
        p = Path(path)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and not any(x.startswith(".") for x in f.relative_to(p).parts)
            )
            other = [f for f in found if f.suffix.lower() not in FORMATS]
            for f in found:
                if f.suffix.lower() in FORMATS:
                    data.extend(_read_one(f, in_directory=True))
            if other:
                kinds = sorted({f.suffix.lower() or "(none)" for f in other})
                data.skipped.append(f"{len(other)} file(s) in {p} of no training format ({', '.join(kinds)})")
        else:
            data.extend(_read_one(p))
    if not data.examples:
        raise no_examples(f"no examples found in {', '.join(map(str, paths))}", data)
    return data


def no_examples(message: str, data: NluData) -> DataError:
    """The error for input with nothing to train on, naming what it held instead."""
    return DataError(message + (f" ({'; '.join(data.skipped)})" if data.skipped else ""))


def _read_one(p: Path, in_directory: bool = False) -> NluData:
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{p}: unknown file type {p.suffix or '(none)'!r}; use .csv, .jsonl, .yml, .yaml or .json"
        )
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{p}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return parse_data(p.read_bytes(), fmt, str(p), in_directory)


def parse_bytes(raw: bytes, fmt: str, name: str) -> list[Example]:
    """The examples of file contents already in memory."""
    data = parse_data(raw, fmt, name)
    if not data.examples:
        raise no_examples(f"{name}: no examples found", data)
    return data.examples


def parse_data(raw: bytes, fmt: str, name: str, in_directory: bool = False) -> NluData:
    """Parse file contents already in memory (the service's uploads use this too).

    A file of a Rasa project that is not training data (config.yml, endpoints.yml) is an
    error when named on its own, and skipped with a word when met in a directory.
    """
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{name}: is UTF-16 encoded; save the file as UTF-8")
    if b"\x00" in raw:
        raise DataError(f"{name}: contains NUL bytes; is it a binary file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name}:{line}: not valid UTF-8 (save the file as UTF-8)") from None
    if fmt in ("csv", "jsonl"):
        examples = (_read_csv if fmt == "csv" else _read_jsonl)(text, name)
        if not examples:
            raise DataError(f"{name}: no examples found")
        return NluData(examples)
    if fmt == "yaml":
        return _read_yaml(text, name, in_directory)
    if fmt == "rasa_json":
        return _read_rasa_json(text, name, in_directory)
    raise DataError(f"{name}: unknown format {fmt!r}")


def _example(
    text: object, intent: object, where: str, entities: object = None, markup: bool = False
) -> Example:
    """One checked example; `entities` as JSON Lines gives them, or `markup` in the text as Rasa writes it."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: empty text")
    if not isinstance(intent, str) or not intent.strip():
        raise DataError(f"{where}: empty intent")
    intent = intent.strip()
    if not _INTENT_NAME.match(intent):
        raise DataError(f"{where}: intent name {intent[:40]!r} has spaces or control characters")
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(f"{where}: text is longer than {MAX_TEXT_CHARS} characters")
    try:
        (text + intent).encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800" escapes decode to text no file can hold
        raise DataError(f"{where}: not valid Unicode (a lone surrogate)") from None
    try:
        if markup:
            text, spans = parse_markup(text)
        else:
            spans = entities_from_json(entities, text) if entities is not None else []
        check_spans(spans, text)
    except MarkupError as exc:
        raise DataError(f"{where}: {exc}") from None
    folded, spans = fold_whitespace(text, spans)
    if not folded:
        raise DataError(f"{where}: empty text")
    return Example(folded, intent, where, tuple(sorted(spans, key=lambda e: (e.start, e.end))))


def _read_csv(text: str, name: str) -> list[Example]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "text" not in header or "intent" not in header:
        raise DataError(f"{name}:1: CSV header must have columns 'text' and 'intent', found {header}")
    reader.fieldnames = header
    examples = []
    try:
        for row in reader:
            where = f"{name}:{reader.line_num}"
            if None in row:
                raise DataError(f"{where}: more fields than the header has (unquoted comma?)")
            if all(not (v or "").strip() for v in row.values()):
                continue  # a blank line
            examples.append(_example(row.get("text"), row.get("intent"), where, markup=True))
    except csv.Error as exc:
        raise DataError(f"{name}:{reader.line_num}: malformed CSV: {exc}") from None
    return examples


def _read_jsonl(text: str, name: str) -> list[Example]:
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON: {exc.msg}") from None
        except RecursionError:  # `[[[[...` a few thousand deep: hostile, not data
            raise DataError(f"{where}: JSON nested too deeply") from None
        if not isinstance(obj, dict) or "text" not in obj or "intent" not in obj:
            raise DataError(f"{where}: each line must be an object with 'text' and 'intent'")
        examples.append(_example(obj["text"], obj["intent"], where, obj.get("entities")))
    return examples


class _SafeNoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml is untyped: its SafeLoader is Any
    """Safe YAML without anchors and aliases: they are the road to a 'billion laughs' bomb."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # yaml nodes: untyped, so Any
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise DataError(f"{mark.line + 1}: YAML anchors and aliases are not allowed in training data")
        return super().compose_node(parent, index)


def _read_yaml(text: str, name: str, in_directory: bool = False) -> NluData:
    try:
        doc = yaml.load(text, Loader=_SafeNoAliasLoader)
    except DataError as exc:
        raise DataError(f"{name}:{exc!s}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{name}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:  # PyYAML composes recursively: `[[[[...` would overflow the stack
        raise DataError(f"{name}: YAML nested too deeply") from None
    lines = text.splitlines()
    keys = sorted(map(str, doc)) if isinstance(doc, dict) else []
    known = [k for k in keys if k in _RASA_SECTIONS]
    if not known:
        if in_directory:
            return NluData(skipped=[f"{name}: not training data (top-level keys {keys[:6]})"])
        raise DataError(
            f"{name}: Rasa NLU YAML needs a top-level 'nlu:' list (found {keys[:6] or type(doc).__name__})"
        )
    unknown = [k for k in keys if k not in _RASA_SECTIONS]
    if unknown:
        where = f"{name}:{_find_line(lines, f'{unknown[0]}:')}"
        raise DataError(
            f"{where}: unknown top-level key {unknown[0]!r} (Rasa's are {sorted(_RASA_SECTIONS)})"
        )
    assert isinstance(doc, dict)
    data = NluData()
    if "nlu" in doc:
        if not isinstance(doc["nlu"], list):
            raise DataError(f"{name}:{_find_line(lines, 'nlu:')}: 'nlu:' must be a list of items")
        for number, block in enumerate(doc["nlu"], start=1):
            _read_block(block, number, name, lines, data)
    if "responses" in doc:
        if not isinstance(doc["responses"], dict):
            raise DataError(f"{name}:{_find_line(lines, 'responses:')}: 'responses:' must map names to lists")
        data.responses.update(
            {str(k): v if isinstance(v, list) else [v] for k, v in doc["responses"].items()}
        )
    rest = [k for k in known if k not in ("nlu", "responses", "version")]
    if rest:
        data.skipped.append(f"{name}: {', '.join(rest)} (not NLU data)")
    return data


# The top-level keys of Rasa's training data and domain files; an NLU item's kinds and fields.
_RASA_SECTIONS = {
    "version", "nlu", "responses", "stories", "rules", "intents", "entities", "slots", "forms",
    "actions", "session_config", "e2e_actions", "config",
}  # fmt: skip
_BLOCK_KINDS = {"intent", "synonym", "regex", "lookup"}
_BLOCK_FIELDS = {"examples", "metadata"}


def _read_block(block: object, number: int, name: str, lines: Sequence[str], data: NluData) -> None:
    """One item of `nlu:`: an intent's examples, or a synonym, regex or lookup table."""
    kinds = sorted(_BLOCK_KINDS & set(block)) if isinstance(block, dict) else []
    keys = sorted(map(str, block)) if isinstance(block, dict) else []
    first = kinds[0] if kinds else next(iter(block), "") if isinstance(block, dict) else str(block)
    heading = f"{first}: {block[first]}" if kinds and isinstance(block, dict) else f"{first}:"
    where = f"{name}:{_find_line(lines, heading)}"
    if len(kinds) != 1:
        found = keys[:6] or [type(block).__name__]
        raise DataError(f"{where}: nlu item {number} has {found}; it needs one of {sorted(_BLOCK_KINDS)}")
    unknown = sorted(set(keys) - _BLOCK_KINDS - _BLOCK_FIELDS)
    if unknown:
        known = sorted(_BLOCK_KINDS | _BLOCK_FIELDS)
        raise DataError(f"{where}: unknown key {unknown[0]!r} in an nlu item (known: {known})")
    assert isinstance(block, dict)
    kind, label = kinds[0], block[kinds[0]]
    if not isinstance(label, str | int | float) or not str(label).strip():
        raise DataError(f"{where}: {kind} needs a name")
    heading_line = int(where.rsplit(":", 1)[1])
    items = _block_examples(block.get("examples"), kind, str(label), where, lines, heading_line)
    if kind == "intent":
        data.examples.extend(_example(item, str(label), at, markup=True) for item, at in items)
    else:
        texts, places = [item for item, _ in items], [at for _, at in items]
        _add_rule(data, kind, str(label).strip(), texts, where, places)


def _add_rule(
    data: NluData, kind: str, name: str, items: Sequence[str], where: str, places: Sequence[str] = ()
) -> None:
    """A synonym (its examples all mean `name`), a regex or a lookup table, checked.

    `places`: each item's file and line, where known (else `where`, the item's heading)."""
    located = [(i, places[n] if n < len(places) else where) for n, i in enumerate(items) if i]
    items = [i for i, _ in located]
    if not items:
        raise DataError(f"{where}: {kind} {name!r} has no examples")
    if kind == "synonym":
        for item, at in located:
            data.add_synonym(item, name, at)
        return
    if kind == "regex":
        for item, at in located:
            try:
                re.compile(item)
            except re.error as exc:
                raise DataError(
                    f"{at}: regex {name!r}: {item[:60]!r} is not a valid pattern: {exc}"
                ) from None
    table = data.regexes if kind == "regex" else data.lookups
    table[name] = _distinct(table.get(name, []), items)


def _distinct(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """Both, in order, each once: a dict, so that a lookup table of 100,000 entries stays linear."""
    return list(dict.fromkeys([*old, *new]))


def _block_examples(
    body: object, kind: str, label: str, where: str, lines: Sequence[str] = (), after: int = 0
) -> list[tuple[str, str]]:
    """The example texts of an item, each with the file and line it is on: an `examples: |`
    block of "- " lines, or a list of `{text, metadata}` items (Rasa's form for examples with
    metadata). `after`: the item's heading line; an example is looked for from there on, and a
    text not found (YAML may fold it) keeps `where`, the heading's."""
    name = where.rsplit(":", 1)[0]
    cursor = after

    def located(text: str, exact: bool) -> str:
        nonlocal cursor
        # A few lines ahead at most: a text never found must not make a big block quadratic.
        for i in range(cursor, min(len(lines), cursor + 200)):
            line = lines[i].strip()
            if (line == text) if exact else (text in line):
                cursor = i + 1
                return f"{name}:{i + 1}"
        return where

    if isinstance(body, list):
        texts = [item.get("text") if isinstance(item, dict) else None for item in body]
        if not all(isinstance(t, str) for t in texts):
            raise DataError(f"{where}: {kind} {label!r}: each item of an examples list needs a 'text'")
        return [(t.strip(), located(t.strip(), exact=False)) for t in texts if isinstance(t, str)]
    if not isinstance(body, str):
        raise DataError(f"{where}: {kind} {label!r} needs an 'examples: |' block")
    out = []
    for item in body.splitlines():
        item = item.strip()
        if not item:
            continue
        at = located(item, exact=True)
        if not item.startswith("-"):
            raise DataError(f"{at}: example lines must start with '- ', found {item[:40]!r}")
        out.append((item[1:].strip(), at))
    return out


def _read_rasa_json(text: str, name: str, in_directory: bool = False) -> NluData:
    """Rasa's JSON training format: `{"rasa_nlu_data": {"common_examples": [...], ...}}`."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{name}: JSON nested too deeply") from None
    body = doc.get("rasa_nlu_data") if isinstance(doc, dict) else None
    if not isinstance(body, dict):
        if in_directory:
            return NluData(skipped=[f"{name}: not training data (no 'rasa_nlu_data')"])
        raise DataError(f"{name}: Rasa's JSON format needs a top-level 'rasa_nlu_data' object")
    unknown = sorted(set(body) - set(_JSON_SECTIONS))
    if unknown:
        raise DataError(
            f"{name}: unknown key {unknown[0]!r} in rasa_nlu_data (known: {sorted(_JSON_SECTIONS)})"
        )
    lines = text.splitlines()
    data = NluData()
    for section in _JSON_SECTIONS:
        items = body.get(section, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise DataError(f"{name}:{_find_line(lines, section)}: '{section}' must be a list of objects")
        line = _find_line(lines, f'"{section}"')
        for i, item in enumerate(items):
            first = next((v for v in item.values() if isinstance(v, str)), section)
            # Items come in file order, a few lines each: searching on from the last, a few
            # lines ahead, keeps a big file linear (a miss keeps the last line found).
            for quoted in {json.dumps(first, ensure_ascii=False)[1:-1], json.dumps(first)[1:-1]}:
                if (found := _find_line(lines, quoted, line - 1, within=200)) > 1:
                    line = found
                    break
            where = f"{name}:{line}"
            if section == "common_examples":
                data.examples.append(
                    _example(item.get("text"), item.get("intent"), where, item.get("entities"))
                )
            elif section == "entity_synonyms":
                value, synonyms = item.get("value"), item.get("synonyms")
                if not isinstance(value, str) or not isinstance(synonyms, list):
                    raise DataError(f"{where}: {section}[{i}] needs 'value' and a list 'synonyms'")
                _add_rule(data, "synonym", value, [str(s).strip() for s in synonyms], where)
            else:
                kind, field_ = ("regex", "pattern") if section == "regex_features" else ("lookup", "elements")
                label, got = item.get("name"), item.get(field_)
                entries = [got] if isinstance(got, str) and kind == "regex" else got
                if not isinstance(label, str) or not isinstance(entries, list):
                    what = (
                        "a string 'pattern'" if kind == "regex" else "a list 'elements' (files are not read)"
                    )
                    raise DataError(f"{where}: {section}[{i}] needs 'name' and {what}")
                _add_rule(data, kind, label, [str(e).strip() for e in entries], where)
    return data


_JSON_SECTIONS = ("common_examples", "entity_synonyms", "regex_features", "lookup_tables")


def _find_line(lines: Sequence[str], needle: str, after: int = 0, within: int | None = None) -> int:
    """The number of the first line past line `after` (and `within` lines of it) holding
    `needle`; 1 when none does."""
    for i in range(after, len(lines) if within is None else min(len(lines), after + within)):
        if needle in lines[i]:
            return i + 1
    return 1


def clean(examples: Sequence[Example], min_per_intent: int = 2) -> tuple[list[Example], DataSummary]:
    """Fold duplicates, leave out conflicting texts, and check every intent has enough examples."""
    summary = DataSummary(rows=len(examples))
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_text[ex.text.casefold()].append(ex)
    kept = []
    for group in by_text.values():
        intents = sorted({e.intent for e in group})
        if len(intents) > 1:
            summary.conflicts.append(
                f"{group[0].text[:60]!r} as {', '.join(intents)} ({', '.join(e.source for e in group[:3])})"
            )
            continue
        summary.duplicates += len(group) - 1
        kept.append(group[0])
    counts = Counter(e.intent for e in kept)
    thin = sorted(i for i, c in counts.items() if c < min_per_intent)
    if thin:
        first = {i: next(e.source for e in kept if e.intent == i) for i in thin[:5]}
        raise DataError(
            f"intents need at least {min_per_intent} examples each; too few for: "
            + ", ".join(f"{i} ({counts[i]}, at {first[i]})" if i in first else i for i in thin)
        )
    summary.kept = len(kept)
    summary.per_intent = dict(sorted(counts.items()))
    return kept, summary


def checksum(examples: Sequence[Example]) -> str:
    """A fingerprint of the training data, stored in the model so it can be traced."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.text}\t{ex.intent}\n".encode())
        if ex.entities:  # data without entities keeps the checksum it always had
            h.update(json.dumps([e.to_json() for e in ex.entities], sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def appended(new: Sequence[Example], old: Sequence[Example]) -> list[Example]:
    """The old examples, then the new: a new one replaces an old one of the same text (any case),
    which is how a misclassification gets fixed."""
    fixed = {e.text.casefold() for e in new}
    return [e for e in old if e.text.casefold() not in fixed] + list(new)
