"""Read labelled utterances from CSV, JSON Lines or Rasa NLU YAML.

Every problem is reported with the file and line it comes from; nothing is
dropped without being counted in the `DataSummary`.
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
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".yml": "yaml", ".yaml": "yaml"}


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
        return out


def read_file(path: str | Path) -> list[Example]:
    """Examples of one file, in order, in the format its extension names."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(f"{p}: unknown file type {p.suffix or '(none)'!r}; use .csv, .jsonl, .yml or .yaml")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{p}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
    return parse_bytes(p.read_bytes(), fmt, str(p))


def parse_bytes(raw: bytes, fmt: str, name: str) -> list[Example]:
    """Parse file contents already in memory (the service's uploads use this too)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{name}: is UTF-16 encoded; save the file as UTF-8")
    if b"\x00" in raw:
        raise DataError(f"{name}: contains NUL bytes; is it a binary file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name}:{line}: not valid UTF-8 (save the file as UTF-8)") from None
    readers = {"csv": _read_csv, "jsonl": _read_jsonl, "yaml": _read_yaml}
    if fmt not in readers:
        raise DataError(f"{name}: unknown format {fmt!r}")
    examples = readers[fmt](text, name)
    if not examples:
        raise DataError(f"{name}: no examples found")
    return examples


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


class _SafeNoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: they are the road to a 'billion laughs' bomb."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise DataError(f"{mark.line + 1}: YAML anchors and aliases are not allowed in training data")
        return super().compose_node(parent, index)


def _read_yaml(text: str, name: str) -> list[Example]:
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
    if not isinstance(doc, dict) or not isinstance(doc.get("nlu"), list):
        raise DataError(f"{name}: Rasa NLU YAML needs a top-level 'nlu:' list")
    lines = text.splitlines()
    examples = []
    for number, block in enumerate(doc["nlu"], start=1):
        kinds = sorted(_BLOCK_KINDS & set(block)) if isinstance(block, dict) else []
        keys = sorted(map(str, block)) if isinstance(block, dict) else []
        first = kinds[0] if kinds else next(iter(block), "") if isinstance(block, dict) else str(block)
        where = f"{name}:{_find_line(lines, f'{first}:' if not kinds else f'{first}: {block[first]}')}"
        if len(kinds) != 1:
            found = keys[:6] or [type(block).__name__]
            raise DataError(f"{where}: nlu item {number} has {found}; it needs one of {sorted(_BLOCK_KINDS)}")
        unknown = sorted(set(keys) - _BLOCK_KINDS - _BLOCK_FIELDS)
        if unknown:
            known = sorted(_BLOCK_KINDS | _BLOCK_FIELDS)
            raise DataError(f"{where}: unknown key {unknown[0]!r} in an nlu item (known: {known})")
        if kinds[0] != "intent":
            continue  # synonyms, regexes, lookup tables: not intent examples
        intent = block["intent"]
        for item in _block_examples(block.get("examples"), intent, where):
            examples.append(_example(item, intent, where, markup=True))
    return examples


# What an `nlu:` item is, and the other keys Rasa allows in one.
_BLOCK_KINDS = {"intent", "synonym", "regex", "lookup"}
_BLOCK_FIELDS = {"examples", "metadata"}


def _block_examples(body: object, intent: object, where: str) -> list[str]:
    """The example texts of an intent: an `examples: |` block of "- " lines, or a list of
    `{text, metadata}` items (Rasa's form for examples with metadata)."""
    if isinstance(body, list):
        texts = [item.get("text") if isinstance(item, dict) else None for item in body]
        if not all(isinstance(t, str) for t in texts):
            raise DataError(f"{where}: intent {intent!r}: each item of an examples list needs a 'text'")
        return [t.strip() for t in texts if isinstance(t, str)]
    if not isinstance(body, str):
        raise DataError(f"{where}: intent {intent!r} needs an 'examples: |' block")
    out = []
    for item in body.splitlines():
        item = item.strip()
        if not item:
            continue
        if not item.startswith("-"):
            raise DataError(f"{where}: example lines must start with '- ', found {item[:40]!r}")
        out.append(item[1:].strip())
    return out


def _find_line(lines: Sequence[str], needle: str) -> int:
    for i, line in enumerate(lines, start=1):
        if needle in line:
            return i
    return 1


def read_files(paths: Iterable[str | Path]) -> list[Example]:
    examples: list[Example] = []
    for p in paths:
        examples.extend(read_file(p))
    return examples


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
