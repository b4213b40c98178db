from __future__ import annotations

from pathlib import Path

import pytest

from training.readers import DataError, Example, clean, parse_bytes, read_file


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,intent\nWhat time is it?,ask_time\n"hi, there",greet\n\n')
    assert read_file(path) == [
        Example("What time is it?", "ask_time", f"{path}:2"),
        Example("hi, there", "greet", f"{path}:3"),
    ]


def test_csv_header_is_case_insensitive_and_extra_columns_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "id,Text,Intent\n1,hello,greet\n")
    assert [(e.text, e.intent) for e in read_file(path)] == [("hello", "greet")]


def test_csv_quoted_newline_is_folded(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", 'text,intent\n"two\nlines",greet\n')
    assert read_file(path)[0].text == "two lines"


def test_jsonl(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.jsonl", '{"text": "hi", "intent": "greet"}\n\n{"text": "bye", "intent": "goodbye"}\n'
    )
    assert [(e.text, e.intent, e.source) for e in read_file(path)] == [
        ("hi", "greet", f"{path}:1"),
        ("bye", "goodbye", f"{path}:3"),
    ]


RASA = """version: "3.1"
nlu:
- intent: greet
  examples: |
    - hey
    - hello there
- intent: weather
  examples: |
    - weather in [London](city) today
    - is it raining in [Paris]{"entity": "city"}
- synonym: nyc
  examples: |
    - new york
"""


def test_rasa_yaml(tmp_path: Path) -> None:
    got = [(e.text, e.intent) for e in read_file(write(tmp_path, "nlu.yml", RASA))]
    assert got == [
        ("hey", "greet"),
        ("hello there", "greet"),
        ("weather in London today", "weather"),
        ("is it raining in Paris", "weather"),
    ]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.csv", "words,label\nhi,greet\n", r"d.csv:1: CSV header must have columns 'text' and 'intent'"),
        ("d.csv", "text,intent\nhi,greet\n ,greet\n", r"d.csv:3: empty text"),
        ("d.csv", "text,intent\nhi,\n", r"d.csv:2: empty intent"),
        ("d.csv", "text,intent\nhi,greet,extra\n", r"d.csv:2: more fields"),
        ("d.csv", b"text,intent\ncaf\xe9,greet\n", r"d.csv:2: not valid UTF-8"),
        ("d.csv", b"\x89PNG\r\n\x1a\n\x00\x00", r"NUL bytes"),
        ("d.jsonl", '{"text": "hi", "intent": "greet"}\n{"text": "hi"\n', r"d.jsonl:2: not valid JSON"),
        ("d.jsonl", '["hi", "greet"]\n', r"d.jsonl:1: each line must be an object"),
        ("d.yml", "nlu:\n- intent: greet\n  examples: |\n    hey\n", r"d.yml:2: example lines must start"),
        ("d.yml", "nlu: [unclosed\n", r"d.yml:\d+: not valid YAML"),
        ("d.yml", "a: &x [1]\nb: *x\n", r"d.yml:2: YAML anchors and aliases are not allowed"),
        ("d.yml", "stories: []\n", r"needs a top-level 'nlu:' list"),
        ("d.txt", "hi\tgreet\n", r"unknown file type '.txt'"),
        ("d.csv", "text,intent\n", r"no examples found"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_file(write(tmp_path, name, content))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_file(tmp_path / "absent.csv")


def test_clean_counts_duplicates_and_reports_conflicts() -> None:
    rows = [
        Example("hi", "greet", "f:2"),
        Example("Hi", "greet", "f:3"),
        Example("hello", "greet", "f:4"),
        Example("bye", "goodbye", "f:5"),
        Example("see you", "goodbye", "f:6"),
        Example("ok", "affirm", "f:7"),
        Example("ok", "greet", "f:8"),
        Example("yes", "affirm", "f:9"),
        Example("sure", "affirm", "f:10"),
    ]
    _, summary = clean(rows)
    assert summary.rows == 9 and summary.kept == 6 and summary.duplicates == 1
    assert len(summary.conflicts) == 1 and "affirm, greet" in summary.conflicts[0]
    assert "f:7" in summary.conflicts[0]
    assert summary.per_intent == {"affirm": 2, "goodbye": 2, "greet": 2}
    assert any("left out" in line for line in summary.lines())


def test_intent_with_one_example_is_an_error() -> None:
    rows = [Example("hi", "greet", "f:2"), Example("hey", "greet", "f:3"), Example("bye", "goodbye", "f:4")]
    with pytest.raises(DataError, match=r"goodbye \(1, at f:4\)"):
        clean(rows)


RASA_FORMS = """\
version: "3.1"
nlu:
- intent: mood
  metadata:
    sentiment: mixed
  examples:
  - text: |
      I feel [great](mood)
    metadata:
      sentiment: positive
  - text: not so good
- intent: greet
  examples: |
    - hi
    - hello
- synonym: New York
  examples: |
    - NYC
- regex: zipcode
  examples: |
    - \\\\d{5}
- lookup: city
  examples: |
    - Berlin
"""


def test_rasa_examples_as_a_list_with_metadata_and_the_other_nlu_items() -> None:
    examples = parse_bytes(RASA_FORMS.encode(), "yaml", "nlu.yml")
    assert [(e.text, e.intent) for e in examples] == [
        ("I feel great", "mood"),
        ("not so good", "mood"),
        ("hi", "greet"),
        ("hello", "greet"),
    ]
    assert [(e.entity, e.value) for e in examples[0].entities] == [("mood", "great")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- intnet: greet\n  examples: |\n    - hi\n", r"nlu.yml:5: nlu item 2 has \['examples', 'intnet'\]"),
        ("- intent: bye\n  exmaples: |\n    - bye\n", r"nlu.yml:5: unknown key 'exmaples'"),
        ("- intent: bye\n  examples:\n  - txt: bye\n", r"nlu.yml:5: intent 'bye': each item .* 'text'"),
    ],
)
def test_a_misspelled_rasa_key_is_an_error_naming_it(body: str, message: str) -> None:
    head = "nlu:\n- intent: greet\n  examples: |\n    - hi\n"
    with pytest.raises(DataError, match=message):
        parse_bytes((head + body).encode(), "yaml", "nlu.yml")
