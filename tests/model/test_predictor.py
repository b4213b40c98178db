from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from model.predictor import Predictor, decide
from model.tokenizer import tokenize


def test_prediction_shape(small_predictor: Predictor) -> None:
    p = small_predictor.predict("What time is it?", top_k=3)
    assert p.intent == "ask_time" and not p.out_of_scope
    assert len(p.ranking) == 3 and p.ranking[0].intent == "ask_time"
    assert 0 < p.confidence <= 1 and p.confidence == p.ranking[0].confidence
    assert [r.confidence for r in p.ranking] == sorted((r.confidence for r in p.ranking), reverse=True)
    assert all(r.intent != "oos" for r in p.ranking)


def test_batch_matches_single_and_keeps_order(small_predictor: Predictor) -> None:
    texts = ["turn the lights off", "What time is it?", "x", "play some jazz please " * 5, ""]
    batch = small_predictor.predict_batch(texts)
    singles = [small_predictor.predict(t) for t in texts]
    assert [b.text for b in batch] == texts
    for b, s in zip(batch, singles, strict=True):
        assert b.intent == s.intent
        assert abs(b.confidence - s.confidence) < 1e-5


def test_top_k_is_bounded_by_the_intents(small_predictor: Predictor) -> None:
    p = small_predictor.predict("hello", top_k=10_000)
    assert len(p.ranking) == len(small_predictor.intents)


def test_out_of_scope_verdict(small_predictor: Predictor) -> None:
    p = small_predictor.predict("how do I bake sourdough bread?")
    assert p.out_of_scope and p.intent is None


def test_decide_rules() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.45, 0.1, 0.45]])
    in_scope = torch.tensor([True, True, False])  # label 2 is `oos`
    d = decide(probs, in_scope, oos_index=2, threshold=0.5)
    assert [x.out_of_scope for x in d] == [False, True, True]
    assert d[0].top == 0 and abs(d[0].top_prob - 0.7) < 1e-6
    d = decide(probs, in_scope, oos_index=None, threshold=0.0)
    assert [x.out_of_scope for x in d] == [False, False, False]


def with_coverage(predictor: Predictor) -> Predictor:
    return Predictor(predictor.net, replace(predictor.meta, word_coverage=True), predictor.tokenizer)


def test_unknown_words_discount_the_confidences(small_predictor: Predictor) -> None:
    """Confidences sum to the share of words seen in training; the rest is out of scope."""
    small_predictor = with_coverage(small_predictor)
    texts = ["What time is it?", "what time is it in zanzibar qwxz", "zanzibar qwxz blorp"]
    sums = small_predictor.probabilities(texts).sum(dim=-1).tolist()
    assert sums[0] == pytest.approx(1.0, abs=1e-5)
    assert small_predictor.coverage is not None
    known = small_predictor.coverage.share(tokenize(texts[1]))
    assert 0.5 <= known < 1 and sums[1] == pytest.approx(known, abs=1e-5)
    assert sums[2] == pytest.approx(0.0, abs=1e-6)
    assert small_predictor.predict(texts[2]).out_of_scope


def test_without_coverage_the_probabilities_are_the_calibrated_softmax(small_predictor: Predictor) -> None:
    plain, small_predictor = small_predictor, with_coverage(small_predictor)
    assert plain.coverage is None
    text = ["what time is it in zanzibar qwxz"]
    assert small_predictor.coverage is not None
    known = small_predictor.coverage.share(tokenize(text[0]))
    assert plain.probabilities(text).sum().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(plain.probabilities(text) * known, small_predictor.probabilities(text))
