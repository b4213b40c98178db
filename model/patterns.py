"""Entities found by pattern, as Rasa's RegexEntityExtractor finds them.

A training file's `regex:` and `lookup:` items named after an entity type mark every
match in a message as that entity: a regex as written, a lookup table's entries as
whole words. Matching ignores case, as Rasa's does by default. The tagger's spans come
first; a match that overlaps one of them, or a longer match, is left out, so that a span
is named once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from model.entities import FoundEntity


@dataclass(frozen=True)
class EntityPatterns:
    """Compiled once at load: entity type -> one pattern of all its regexes and lookup entries."""

    compiled: tuple[tuple[str, re.Pattern[str]], ...] = ()

    @classmethod
    def build(
        cls, regexes: Mapping[str, Sequence[str]], lookups: Mapping[str, Sequence[str]]
    ) -> EntityPatterns:
        names = sorted(set(regexes) | set(lookups))
        out = []
        for name in names:
            parts = [f"(?:{r})" for r in regexes.get(name, [])]
            # Longest first, so "new york city" wins over "new york"; \b only next to word characters.
            for entry in sorted(lookups.get(name, []), key=len, reverse=True):
                left = r"\b" if entry[:1].isalnum() or entry[:1] == "_" else ""
                right = r"\b" if entry[-1:].isalnum() or entry[-1:] == "_" else ""
                parts.append(f"{left}{re.escape(entry)}{right}")
            out.append((name, re.compile("|".join(parts), re.IGNORECASE)))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.compiled)

    def find(self, text: str, taken: Sequence[FoundEntity] = ()) -> list[FoundEntity]:
        """The matches in `text` that meet no span of `taken`; of overlapping ones, the longest."""
        matches = [
            (name, m)
            for name, pattern in self.compiled
            for m in pattern.finditer(text)
            if m.end() > m.start()
        ]
        matches.sort(key=lambda nm: (nm[1].start() - nm[1].end(), nm[1].start()))
        spans = [(e.start, e.end) for e in taken]
        found = []
        for name, m in matches:
            if not any(m.start() < e and s < m.end() for s, e in spans):
                spans.append((m.start(), m.end()))
                found.append(FoundEntity(name, m.group(), m.start(), m.end(), 1.0, by_pattern=True))
        return sorted(found, key=lambda e: e.start)
