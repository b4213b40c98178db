"""Regexes and lookup tables as Rasa's RegexEntityExtractor applies them."""

from __future__ import annotations

from model.entities import FoundEntity
from model.patterns import EntityPatterns


def test_lookup_entries_match_whole_words_any_case_longest_first() -> None:
    patterns = EntityPatterns.build({}, {"city": ["new york", "new york city", "york", "c++"]})
    found = patterns.find("NEW YORK CITY or yorkshire, and c++")
    assert [(e.entity, e.value, e.start, e.end) for e in found] == [
        ("city", "NEW YORK CITY", 0, 13),
        ("city", "c++", 32, 35),
    ]


def test_regexes_of_several_types_and_spans_already_taken() -> None:
    patterns = EntityPatterns.build({"zip": [r"\b[0-9]{5}\b"], "code": [r"[0-9]{3}"]}, {})
    assert not EntityPatterns.build({}, {}) and patterns
    tagged = FoundEntity("place", "10115", 5, 10, 0.9)
    found = patterns.find("near 10115 or 20095", [tagged])
    assert [(e.entity, e.value) for e in found] == [("zip", "20095")]  # "code" inside it: taken
    assert all(e.by_pattern and e.confidence == 1.0 for e in found)
