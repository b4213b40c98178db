"""One meaning for every number (docs/api.md): what an answer shows never contradicts itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.conftest import ready_client

# In scope, out of scope by every rule the small model has (its `oos` rows, the threshold, unknown
# words), and in between.
TEXTS = [
    "What time is it?",
    "turn off the lights",
    "how do I bake sourdough bread?",
    "asdf qwer",
    "zanzibar qwxz blorp",
    "what's the capital of peru",
    "set an alarm for 7",
    "hello",
]


@pytest.fixture(scope="module")
def client(small_model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(Settings(model_dir=small_model_dir))


def check_answer(answer: dict[str, Any], intents: int) -> None:
    ranking = answer["ranking"]
    probabilities = [r["confidence"] for r in ranking]
    # The ranking: the intents' calibrated probabilities, most probable first, summing to at most 1.
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1 + 1e-5 and all(0 <= p <= 1 for p in probabilities)
    assert "oos" not in {r["intent"] for r in ranking}
    # `confidence` is the ranking's first, in scope or not.
    assert answer["confidence"] == probabilities[0]
    # The verdict: its own score, at least 0.5 exactly when out of scope; the intent named only in scope.
    assert 0 <= answer["out_of_scope_score"] <= 1
    assert answer["out_of_scope"] == (answer["out_of_scope_score"] >= 0.5)
    assert answer["intent"] == (None if answer["out_of_scope"] else ranking[0]["intent"])
    assert len(ranking) <= intents


def test_classify_and_batch_answers_are_consistent(client: TestClient) -> None:
    intents = len(client.get("/v1/intents").json()["intents"])
    answers = [client.post("/v1/classify", json={"text": t, "top_k": intents}).json() for t in TEXTS]
    assert any(a["out_of_scope"] for a in answers) and not all(a["out_of_scope"] for a in answers)
    for answer in answers:
        check_answer(answer, intents)
    batch = client.post("/v1/classify/batch", json={"texts": TEXTS, "top_k": 3}).json()["results"]
    for answer, alone in zip(batch, answers, strict=True):
        check_answer(answer, intents)
        assert answer["out_of_scope"] == alone["out_of_scope"]
        assert answer["ranking"][0]["intent"] == alone["ranking"][0]["intent"]


def test_rasa_parse_never_ranks_a_number_against_its_order(client: TestClient) -> None:
    for text in TEXTS:
        parsed = client.post("/model/parse", json={"text": text}).json()
        answer = client.post("/v1/classify", json={"text": text, "top_k": 10}).json()
        ranking = parsed["intent_ranking"]
        confidences = [r["confidence"] for r in ranking]
        assert confidences == sorted(confidences, reverse=True), (text, ranking)
        assert parsed["intent"] == ranking[0]
        intents = ranking[1:] if answer["out_of_scope"] else ranking
        assert (parsed["intent"]["name"] == "nlu_fallback") == answer["out_of_scope"]
        # Below the fallback (if any): the intents' probabilities, exactly as /v1/classify gives them.
        assert [(r["name"], r["confidence"]) for r in intents] == [
            (r["intent"], r["confidence"]) for r in answer["ranking"]
        ]
