"""Entity annotations: Rasa's inline markup, span checks, and offsets kept through whitespace folding.

Rasa writes an entity inside the example: `[Berlin](city)`, `[NYC](city:New York)`,
`[Berlin]{"entity": "city", "role": "destination"}` or several for one span,
`[Berlin][{"entity": "city"}, {"entity": "location"}]`. The same markup is accepted in
a CSV's `text`; JSON Lines rows give character offsets instead.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

# The characters an entity type may not hold (as for intent names): whitespace and controls.
_NAME = re.compile(r"^[^\s\x00-\x1f]{1,128}$")
_MARKUP = re.compile(
    r"\[(?P<span>[^\]]*)\]"
    r"(?:\((?P<plain>[^)]*)\)"  # (entity) or (entity:value)
    r"|(?P<object>\{[^{}]*\})"  # {"entity": ..., "value": ..., "role": ..., "group": ...}
    r"|\[(?P<objects>\s*\{[^\[\]]*\}\s*)\])"  # [{...}, {...}]: several annotations of one span
)
_KEYS = {"entity", "value", "role", "group"}


class MarkupError(ValueError):
    """A malformed annotation; the reader adds the file and line."""


@dataclass(frozen=True)
class Entity:
    """A typed span of an example's text: `text[start:end]`, `value` its normalised meaning."""

    start: int
    end: int
    entity: str
    value: str
    role: str | None = None
    group: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"start": self.start, "end": self.end, "entity": self.entity}
        out["value"] = self.value
        out.update({k: v for k, v in (("role", self.role), ("group", self.group)) if v is not None})
        return out


def parse_markup(text: str) -> tuple[str, list[Entity]]:
    """'fly to [Berlin](city)' -> ('fly to Berlin', [Entity(7, 13, 'city', 'Berlin')])."""
    plain: list[str] = []
    entities: list[Entity] = []
    position = 0  # in `text`
    length = 0  # of the plain text so far
    for match in _MARKUP.finditer(text):
        before = text[position : match.start()]
        plain.append(before)
        length += len(before)
        span = match["span"]
        if not span.strip():
            raise MarkupError(f"empty entity span in {match.group()!r}")
        for fields in _annotations(match):
            entities.append(_entity(length, length + len(span), span, fields))
        plain.append(span)
        length += len(span)
        position = match.end()
    plain.append(text[position:])
    out = "".join(plain)
    if _looks_like_markup(out):
        raise MarkupError(f"unclosed or malformed entity markup in {text[:60]!r}")
    return out, entities


def _annotations(match: re.Match[str]) -> list[dict[str, object]]:
    if match["plain"] is not None:
        entity, sep, value = match["plain"].partition(":")
        return [{"entity": entity.strip(), **({"value": value.strip()} if sep else {})}]
    source = match["object"] if match["object"] is not None else f"[{match['objects']}]"
    try:
        parsed = json.loads(source)
    except json.JSONDecodeError as exc:
        raise MarkupError(f"entity annotation {source[:60]!r} is not valid JSON: {exc.msg}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items or not all(isinstance(item, dict) for item in items):
        raise MarkupError(f"entity annotation {source[:60]!r} must be an object or a list of objects")
    return items


def _entity(start: int, end: int, span: str, fields: dict[str, object]) -> Entity:
    unknown = sorted(set(fields) - _KEYS)
    if unknown:
        raise MarkupError(f"entity annotation has unknown keys {unknown}; use {sorted(_KEYS)}")
    entity = fields.get("entity")
    if not isinstance(entity, str) or not _NAME.match(entity):
        raise MarkupError(f"entity type {entity!r} must be a name without spaces")
    value = fields.get("value", span)
    extra = {k: fields.get(k) for k in ("role", "group")}
    for key, item in (("value", value), *extra.items()):
        if item is not None and (not isinstance(item, str) or not item.strip()):
            raise MarkupError(f"entity {entity!r}: {key} must be a non-empty string")
    assert isinstance(value, str)
    # role and group are str or None, as the loop above checked; mypy cannot follow it through the dict.
    return Entity(start, end, entity, value, extra["role"], extra["group"])  # type: ignore[arg-type]


def _looks_like_markup(text: str) -> bool:
    """A bracketed span still followed by '(', '{' or '[{' after parsing: markup never closed."""
    return re.search(r"\[[^\]]*\](?:\(|\{|\[\s*\{)", text) is not None


def entities_from_json(items: object, text: str) -> list[Entity]:
    """JSON Lines `"entities": [{"start", "end", "entity", "value"?, "role"?, "group"?}]`."""
    if not isinstance(items, list):
        raise MarkupError("'entities' must be a list of objects")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MarkupError(f"entities[{i}] must be an object")
        start, end = item.get("start"), item.get("end")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise MarkupError(f"entities[{i}]: 'start' and 'end' must be integers")
        assert isinstance(start, int) and isinstance(end, int)
        if not 0 <= start < end <= len(text):
            raise MarkupError(f"entities[{i}]: span {start}..{end} is outside the text (length {len(text)})")
        if not text[start:end].strip():
            raise MarkupError(f"entities[{i}]: span {start}..{end} holds only whitespace")
        fields = {k: v for k, v in item.items() if k not in ("start", "end")}
        try:
            out.append(_entity(start, end, text[start:end], fields))
        except MarkupError as exc:
            raise MarkupError(f"entities[{i}]: {exc}") from None
    return out


def check_spans(entities: Sequence[Entity], text: str) -> None:
    """Spans hold text, and two spans either coincide (several types of one span) or do not meet."""
    ordered = sorted(entities, key=lambda e: (e.start, e.end))
    for e in ordered:
        if not text[e.start : e.end].strip():
            raise MarkupError(f"entity {e.entity!r} spans only whitespace at {e.start}..{e.end}")
    for a, b in itertools.pairwise(ordered):
        if b.start < a.end and (a.start, a.end) != (b.start, b.end):
            raise MarkupError(
                f"entities {a.entity!r} ({a.start}..{a.end}) and {b.entity!r} ({b.start}..{b.end}) overlap"
            )


def fold_whitespace(text: str, entities: Sequence[Entity]) -> tuple[str, list[Entity]]:
    """Runs of whitespace become one space and the ends are trimmed; spans follow their words."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    folded = " ".join(text[s:e] for s, e in words)
    if not entities:
        return folded, []
    # Where each kept character lands in the folded text.
    where: dict[int, int] = {}
    at = 0
    for s, e in words:
        for i in range(s, e):
            where[i] = at + i - s
        at += e - s + 1
    out = []
    for ent in entities:
        kept = [i for i in range(ent.start, ent.end) if i in where]
        start, end = where[kept[0]], where[kept[-1]] + 1
        value = ent.value if ent.value != text[ent.start : ent.end] else folded[start:end]
        out.append(Entity(start, end, ent.entity, value, ent.role, ent.group))
    return folded, out
