"""Entities end to end on a tiny real training set: train, tag, save, load, evaluate."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from model.artifact import META_FILE, ArtifactError, load, save
from model.predictor import Predictor
from tests.conftest import ALARM, CITIES, TIMES, entity_examples
from training.evaluate import evaluate
from training.readers import Example, NluData
from training.train import TrainResult


def test_one_pass_names_the_intent_and_tags_its_details(tagged_result: TrainResult) -> None:
    assert tagged_result.meta.entity_types == ["city", "time"]
    predictor = Predictor(tagged_result.net, tagged_result.meta, tagged_result.tokenizer)
    alarm = predictor.predict("Wake me up at 6:30")
    assert alarm.intent == "set_alarm"
    assert [(e.entity, e.value, e.start, e.end) for e in alarm.entities] == [("time", "6:30", 14, 18)]
    weather = predictor.predict("weather in  Tokyo")
    assert [(e.entity, e.value) for e in weather.entities] == [("city", "Tokyo")]
    assert 0 < weather.entities[0].confidence <= 1
    assert predictor.predict("hello").entities == []
    # Rasa's synonyms: a span the data gave a value of its own answers with that value.
    assert tagged_result.meta.entity_synonyms == {"the big apple": "new york"}
    (apple,) = predictor.predict("how warm is The Big Apple").entities
    assert (apple.value, apple.start, apple.end) == ("new york", 12, 25)
    assert predictor.predict("hello").to_dict()["entities"] == []


def test_tagger_round_trips_through_the_artifact_and_is_checked(
    tagged_result: TrainResult, tmp_path: Path
) -> None:
    path = save(tagged_result.net, tagged_result.meta, tmp_path / "m")
    texts = ["set an alarm for 8:15", "is it raining in lima", "hi"]
    before = Predictor(tagged_result.net, tagged_result.meta, tagged_result.tokenizer).predict_batch(texts)
    for quantize in (False, True):
        after = Predictor.load(path, quantize=quantize).predict_batch(texts)
        assert [[(e.entity, e.start, e.end) for e in p.entities] for p in after] == [
            [(e.entity, e.start, e.end) for e in p.entities] for p in before
        ]
    raw = json.loads((path / META_FILE).read_text())
    assert raw["entity_types"] == ["city", "time"] and raw["model"]["entity_tags"] == 5
    assert Predictor.load(path).meta.entity_synonyms == {"the big apple": "new york"}
    raw["entity_types"] = ["city"]
    (path / META_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="entity_types"):
        load(path)


def test_evaluation_scores_exact_spans(tagged_result: TrainResult) -> None:
    predictor = Predictor(tagged_result.net, tagged_result.meta, tagged_result.tokenizer)
    held_out = entity_examples(TIMES[6:], CITIES[6:])
    metrics = evaluate(predictor, held_out)["metrics"]
    assert set(metrics["entities"]) == {"city", "time"}
    assert metrics["entity_f1"] >= 0.6, metrics
    assert metrics["entities"]["time"]["support"] == len(ALARM) * 2
    # A model that tags nothing finds none of them.
    plain = [Example(e.text, e.intent) for e in held_out]
    assert "entity_f1" not in evaluate(predictor, plain)["metrics"]


def test_a_model_without_entities_has_no_tagger(small_result: TrainResult) -> None:
    assert small_result.net.tagger is None and small_result.net.cfg.entity_tags == 0
    assert small_result.meta.entity_types == []
    assert "entity_types" not in small_result.meta.to_dict()
    assert "entity_tags" not in small_result.meta.to_dict()["model"]


def test_a_rasa_project_trains_with_roles_synonyms_patterns_and_retrieval_responses(
    rasa_bot: tuple[TrainResult, NluData], tmp_path: Path
) -> None:
    result, data = rasa_bot
    meta = result.meta
    assert "stories.yml: stories (not NLU data)" in "\n".join(data.skipped)
    assert set(meta.entity_kinds) == {
        ("city", "departure", None),
        ("city", "destination", None),
        ("flight_number", None, None),
    }
    # Rasa's rule: a pattern extracts only when named after an annotated entity type.
    assert meta.entity_regexes == {"flight_number": ["\\b[A-Z]{2}[0-9]{1,4}\\b"]}
    assert meta.entity_lookups == {"city": ["reykjavik"]}
    assert any("help" in line for line in result.summary.lines())
    assert meta.entity_synonyms == {"nyc": "new york"}
    assert meta.responses == {"utter_chitchat/ask_name": [{"text": "I am a bot."}]}
    predictor = Predictor.load(save(result.net, meta, tmp_path / "m"))
    flight = predictor.predict("fly from tokyo to berlin")
    assert flight.intent == "book_flight"
    assert [(e.value, e.role) for e in flight.entities] == [("tokyo", "departure"), ("berlin", "destination")]
    assert flight.to_dict()["entities"][0]["role"] == "departure"
    # Never a city in training: the lookup table finds it.
    found = {e.value: e for e in predictor.predict("hello reykjavik").entities}
    assert "reykjavik" in found and found["reykjavik"].entity == "city"
    # The tagger finds "nyc" where a city stands; the synonym gives it its value, the text keeps its span.
    text = "fly from nyc to berlin"
    nyc, berlin = predictor.predict(text).entities
    assert (nyc.entity, nyc.role, nyc.value) == ("city", "departure", "new york")
    assert text[nyc.start : nyc.end] == "nyc"
    assert (berlin.value, berlin.role) == ("berlin", "destination")


def test_patterns_find_entities_besides_the_tagger_and_never_on_its_spans(small_result: TrainResult) -> None:
    meta = replace(small_result.meta, entity_regexes={"zipcode": [r"\b[0-9]{5}\b"]}, entity_lookups={})
    predictor = Predictor(small_result.net, meta, small_result.tokenizer)
    (zipcode,) = predictor.predict("weather for 90210 please").entities
    assert (zipcode.entity, zipcode.value, zipcode.start, zipcode.end, zipcode.by_pattern) == (
        "zipcode",
        "90210",
        12,
        17,
        True,
    )
    assert predictor.predict("weather for 9021").entities == []


def test_a_training_job_keeps_an_uploads_rules_and_an_append_keeps_the_active_ones(
    rasa_bot: tuple[TrainResult, NluData], tmp_path: Path
) -> None:
    from store.directory import DirectoryStore
    from store.jobs import JobRequest, open_job_store
    from tests.conftest import SMALL
    from training.job_request import submit
    from training.jobs import run_job

    _, data = rasa_bot
    store = DirectoryStore(tmp_path / "store")
    jobs = open_job_store(store)
    options = dict(SMALL, epochs=2, min_steps=0, unknown_detector=False)
    first = submit(jobs, JobRequest(data.examples, "replace", "always", options, rules=data.rules()))
    assert jobs.claim_next() == first["id"]  # as a dispatcher does before it starts the job
    run_job(store, first["id"])
    assert jobs.get(first["id"])["state"] == "succeeded"
    meta = store.meta(store.active() or "")
    assert meta.entity_synonyms == {"nyc": "new york"} and meta.entity_lookups == {"city": ["reykjavik"]}
    assert list(meta.responses) == ["utter_chitchat/ask_name"]
    more = [Example("hello there friend", "greet")]
    second = submit(jobs, JobRequest(more, "append", "always", options))
    assert jobs.claim_next() == second["id"]
    run_job(store, second["id"])
    appended = store.meta(store.active() or "")
    assert appended.version != meta.version
    assert (
        appended.entity_synonyms,
        appended.entity_lookups,
        appended.entity_regexes,
        appended.responses,
    ) == (
        meta.entity_synonyms,
        meta.entity_lookups,
        meta.entity_regexes,
        meta.responses,
    )
