from __future__ import annotations

from pathlib import Path

import pytest

from training.readers import DataError, Example, clean, parse_bytes, parse_data, read_data, read_file


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
        ("d.yml", "nlu:\n- intent: greet\n  examples: |\n    hey\n", r"d.yml:4: example lines must start"),
        ("d.yml", "nlu: [unclosed\n", r"d.yml:\d+: not valid YAML"),
        ("d.yml", "a: &x [1]\nb: *x\n", r"d.yml:2: YAML anchors and aliases are not allowed"),
        ("d.yml", "stories: []\n", r"no examples found in .*d.yml: stories \(not NLU data\)"),
        ("d.yml", "recipe: default\n", r"d.yml: Rasa NLU YAML needs a top-level 'nlu:' list"),
        ("d.yml", "version: '3.1'\nnul: []\n", r"d.yml:2: unknown top-level key 'nul'"),
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


def test_synonyms_regexes_and_lookups_are_kept_and_counted() -> None:
    data = parse_data(RASA_FORMS.encode(), "yaml", "nlu.yml")
    assert data.synonyms == {"nyc": "New York"}
    assert data.regexes == {"zipcode": ["\\\\d{5}"]}
    assert data.lookups == {"city": ["Berlin"]}
    assert data.lines() == ["1 entity synonyms, 1 regex patterns (1 names), 1 lookup entries (1 tables) read"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("- regex: zip\n  examples: |\n    - '[0-9'\n", r"nlu.yml:7: regex 'zip': .* is not a valid pattern"),
        (
            "- synonym: a\n  examples: |\n    - x\n- synonym: b\n  examples: |\n    - X\n",
            r"nlu.yml:10: synonym 'X' maps to 'b' here and to 'a' at nlu.yml:7",
        ),
        ("- lookup: city\n  examples: |\n", r"nlu.yml:5: lookup 'city' has no examples"),
    ],
)
def test_bad_synonyms_regexes_and_lookups_are_errors(body: str, message: str) -> None:
    head = "nlu:\n- intent: greet\n  examples: |\n    - hi\n"
    with pytest.raises(DataError, match=message):
        parse_data((head + body).encode(), "yaml", "nlu.yml")


RASA_JSON = """{
  "rasa_nlu_data": {
    "common_examples": [
      {"text": "hello", "intent": "greet", "entities": []},
      {"text": "show me chinese restaurants", "intent": "restaurant_search",
       "entities": [{"start": 8, "end": 15, "value": "chinese", "entity": "cuisine"}]},
      {"text": "i want chines food", "intent": "restaurant_search",
       "entities": [{"start": 7, "end": 13, "value": "chinese", "entity": "cuisine", "role": "main"}]}
    ],
    "regex_features": [{"name": "zipcode", "pattern": "[0-9]{5}"}],
    "lookup_tables": [{"name": "cuisine", "elements": ["thai", "italian"]}],
    "entity_synonyms": [{"value": "chinese", "synonyms": ["Chines", "Chinese food"]}]
  }
}
"""


def test_rasa_json_format() -> None:
    data = parse_data(RASA_JSON.encode(), "rasa_json", "nlu.json")
    assert [(e.text, e.intent) for e in data.examples][1] == (
        "show me chinese restaurants",
        "restaurant_search",
    )
    (typo,) = data.examples[2].entities
    assert (typo.start, typo.end, typo.entity, typo.value, typo.role) == (7, 13, "cuisine", "chinese", "main")
    assert data.synonyms == {"chines": "chinese", "chinese food": "chinese"}
    assert data.regexes == {"zipcode": ["[0-9]{5}"]} and data.lookups == {"cuisine": ["thai", "italian"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"nlu": []}', r"nlu.json: Rasa's JSON format needs a top-level 'rasa_nlu_data'"),
        ('{"rasa_nlu_data": {"common_exemples": []}}', r"unknown key 'common_exemples'"),
        ('{"rasa_nlu_data": {"common_examples": [\n{"text": "hi"}]}}', r"nlu.json:2: empty intent"),
        ('{"rasa_nlu_data": {"lookup_tables": [{"name": "c", "elements": "c.txt"}]}}', r"files are not read"),
    ],
)
def test_bad_rasa_json_names_the_problem(content: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_data(content.encode(), "rasa_json", "nlu.json")


def rasa_project(root: Path) -> Path:
    """A Rasa project's layout as `rasa init` makes it, cut down."""
    (root / "data").mkdir(parents=True)
    write(root, "config.yml", "recipe: default.v1\nlanguage: en\npipeline: []\n")
    write(
        root, "domain.yml", 'version: "3.1"\nintents:\n- greet\nresponses:\n  utter_greet:\n  - text: Hey!\n'
    )
    write(root, "data/nlu.yml", "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello\n")
    write(root, "data/more.json", RASA_JSON)
    write(root, "data/stories.yml", "stories:\n- story: happy\n  steps:\n  - intent: greet\n")
    write(root, "data/rules.yml", "rules:\n- rule: hi\n  steps:\n  - intent: greet\n")
    write(root, "data/README.txt", "notes")
    write(root, "data/.hidden.yml", "not: read")
    return root


def test_a_rasa_project_directory_reads_its_nlu_parts_and_names_the_rest(tmp_path: Path) -> None:
    root = rasa_project(tmp_path)
    data = read_data([root / "data", root / "domain.yml"])
    assert [e.text for e in data.examples] == [
        "hello",
        "show me chinese restaurants",
        "i want chines food",
        "hi",
        "hello",
    ]
    assert data.responses == {"utter_greet": [{"text": "Hey!"}]}
    skipped = "\n".join(data.skipped)
    for part in (
        "rules.yml: rules (not NLU data)",
        "stories.yml: stories (not NLU data)",
        "domain.yml: intents",
    ):
        assert part in skipped
    assert "1 file(s) in" in skipped and "(.txt)" in skipped and "hidden" not in skipped
    whole = read_data([root])  # the project itself: config.yml is named, not read
    assert "config.yml: not training data" in "\n".join(whole.skipped)
    with pytest.raises(DataError, match=r"no examples found .*stories.yml: stories"):
        read_data([root / "data" / "stories.yml"])


def test_a_bad_example_is_named_by_its_own_line_not_its_intent_block() -> None:
    body = "nlu:\n- intent: greet\n  examples: |\n    - hi\n    - hello [there](place\n- intent: weather\n"
    body += "  examples: |\n    - rain?\n\n    - sun in [Rome](city)\n"
    with pytest.raises(DataError, match=r"nlu.yml:5: unclosed or malformed entity markup"):
        parse_bytes(body.encode(), "yaml", "nlu.yml")
    good = body.replace("[there](place", "there")
    examples = parse_bytes(good.encode(), "yaml", "nlu.yml")
    assert [(e.text, e.source) for e in examples] == [
        ("hi", "nlu.yml:4"),
        ("hello there", "nlu.yml:5"),
        ("rain?", "nlu.yml:8"),
        ("sun in Rome", "nlu.yml:10"),
    ]
