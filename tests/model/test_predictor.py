from __future__ import annotations

import torch

from model.predictor import Predictor, decide


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
