"""Entity annotations in every form the readers take: Rasa markup, JSON Lines offsets, CSV text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.markup import Entity
from training.readers import DataError, Example, checksum, parse_bytes, read_file


def spans(example: Example) -> list[tuple[str, str, str]]:
    return [(example.text[e.start : e.end], e.entity, e.value) for e in example.entities]


RASA = """\
version: "3.1"
nlu:
- intent: book_flight
  examples: |
    - fly from [Boston](city) to [NYC](city:New York City)
    - a flight to [Berlin]{"entity": "city", "role": "destination", "group": "1"} please
    - from [Paris][{"entity": "city"}, {"entity": "airport", "value": "CDG"}]
- intent: greet
  examples: |
    - hello there
"""


def test_rasa_markup_becomes_spans_of_the_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "nlu.yml"
    path.write_text(RASA, encoding="utf-8")
    plain, role, several, greet = read_file(path)
    assert plain.text == "fly from Boston to NYC"
    assert spans(plain) == [("Boston", "city", "Boston"), ("NYC", "city", "New York City")]
    assert role.text == "a flight to Berlin please"
    assert role.entities == (Entity(12, 18, "city", "Berlin", "destination", "1"),)
    assert several.text == "from Paris"
    assert spans(several) == [("Paris", "city", "Paris"), ("Paris", "airport", "CDG")]
    assert greet.entities == ()


def test_csv_text_takes_the_same_markup_and_literal_brackets_stay() -> None:
    raw = b'text,intent\n"wake me at [6:30](time)",set_alarm\n"press [ctrl] (c) to copy",help\n'
    alarm, help_ = parse_bytes(raw, "csv", "d.csv")
    assert (alarm.text, spans(alarm)) == ("wake me at 6:30", [("6:30", "time", "6:30")])
    assert (help_.text, help_.entities) == ("press [ctrl] (c) to copy", ())


def test_jsonl_offsets_follow_the_words_when_whitespace_is_folded() -> None:
    text = "  wake me   at 6:30 "
    row = {"text": text, "intent": "set_alarm", "entities": [{"start": 15, "end": 19, "entity": "time"}]}
    (example,) = parse_bytes(json.dumps(row).encode(), "jsonl", "d.jsonl")
    assert example.text == "wake me at 6:30"
    assert spans(example) == [("6:30", "time", "6:30")]


def test_examples_round_trip_through_their_json_rows() -> None:
    raw = b'text,intent\n"to [Berlin]{""entity"": ""city"", ""role"": ""to""} from [Rome](city:Roma)",fly\n'
    (example,) = parse_bytes(raw, "csv", "d.csv")
    again = Example.from_json(json.loads(json.dumps(example.to_json())))
    assert (again.text, again.intent, again.entities) == (example.text, example.intent, example.entities)


def test_checksum_changes_with_entities_and_not_without() -> None:
    bare = Example("fly to Rome", "fly")
    tagged = Example("fly to Rome", "fly", entities=(Entity(7, 11, "city", "Rome"),))
    assert checksum([bare]) != checksum([tagged])
    # Data without entities keeps the fingerprint that models trained before entities carry.
    assert checksum([bare]) == "sha256:" + __import__("hashlib").sha256(b"fly to Rome\tfly\n").hexdigest()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('"to [Berlin](city",x', "unclosed or malformed entity markup"),
        ('"to [Berlin]{""entity"": 3}",x', "entity type 3"),
        ('"to [Berlin]{""entity"": ""city"", ""colour"": ""red""}",x', r"unknown keys \['colour'\]"),
        ('"to [Berlin]{""entity"": ""city""",x', "unclosed or malformed"),
        ('"to [ ](city)",x', "empty entity span"),
        ('"to [Berlin](my city)",x', "must be a name without spaces"),
        ('"to [Berlin][{""entity"": ""city""}, 4]",x', "malformed entity markup"),
    ],
)
def test_bad_markup_names_file_and_line(line: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        parse_bytes(f"text,intent\nhello,x\n{line}\n".encode(), "csv", "d.csv")
    assert str(info.value).startswith("d.csv:3:")


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ([{"start": 0, "end": 40, "entity": "t"}], "outside the text"),
        ([{"start": 3, "end": 3, "entity": "t"}], "outside the text"),
        ([{"start": "0", "end": 2, "entity": "t"}], "must be integers"),
        ([{"start": True, "end": 2, "entity": "t"}], "must be integers"),
        ([{"start": 0, "end": 4, "entity": "t"}, {"start": 3, "end": 7, "entity": "u"}], "overlap"),
        ([{"start": 4, "end": 5, "entity": "t"}], "only whitespace"),
        ([{"start": 0, "end": 2, "entity": "t", "value": ""}], "value must be a non-empty string"),
        ({"start": 0}, "must be a list"),
        (["x"], r"entities\[0\] must be an object"),
    ],
)
def test_bad_offsets_name_file_and_line(entities: object, message: str) -> None:
    rows = [{"text": "ok", "intent": "x"}, {"text": "wake up at 6", "intent": "x", "entities": entities}]
    raw = "\n".join(json.dumps(r) for r in rows).encode()
    with pytest.raises(DataError, match=message) as info:
        parse_bytes(raw, "jsonl", "d.jsonl")
    assert str(info.value).startswith("d.jsonl:2:")


def test_one_span_with_two_types_is_not_an_overlap() -> None:
    row = {
        "text": "to Paris",
        "intent": "fly",
        "entities": [{"start": 3, "end": 8, "entity": "city"}, {"start": 3, "end": 8, "entity": "airport"}],
    }
    (example,) = parse_bytes(json.dumps(row).encode(), "jsonl", "d.jsonl")
    assert [e.entity for e in example.entities] == ["city", "airport"]
