from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from model.predictor import Predictor, verdicts
from model.runtime import Runtime
from model.tokenizer import tokenize
from training.readers import Example


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


def test_verdict_rules() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.45, 0.1, 0.45]], dtype=np.float32)
    in_scope = np.array([True, True, False])  # label 2 is `oos`
    top, top_prob, rejected = verdicts(probs, in_scope, oos_index=2, threshold=0.5)
    assert rejected.tolist() == [False, True, True]
    assert top[0] == 0 and abs(float(top_prob[0]) - 0.7) < 1e-6
    _, _, rejected = verdicts(probs, in_scope, oos_index=None, threshold=0.0)
    assert rejected.tolist() == [False, False, False]


def with_coverage(predictor: Predictor, threshold: float = 0.3) -> Predictor:
    meta = replace(predictor.meta, coverage_threshold=threshold)
    return Predictor(predictor.scorer, meta, predictor.tokenizer)


def test_input_of_unseen_words_is_out_of_scope_with_the_share(small_predictor: Predictor) -> None:
    assert small_predictor.meta.coverage_threshold > 0  # the default
    covered, small_predictor = with_coverage(small_predictor), with_coverage(small_predictor, 0.0)
    texts = ["What time is it?", "what time is it in zanzibar qwxz", "zanzibar qwxz blorp"]
    assert covered.coverage is not None and small_predictor.shares(texts) is None
    shares = covered.shares(texts)
    assert shares is not None
    assert shares[0] == 1.0 and shares[2] == 0.0
    assert shares[1] == covered.coverage.share(tokenize(texts[1])) and 0.5 <= shares[1] < 1
    # Probabilities stay the calibrated softmax; only the verdict changes.
    assert np.array_equal(covered.probabilities(texts), small_predictor.probabilities(texts))
    plain, both = small_predictor.predict(texts[0]), covered.predict(texts[0])
    assert plain.intent == both.intent == "ask_time" and plain.confidence == both.confidence
    unknown = covered.predict(texts[2])
    assert unknown.out_of_scope and unknown.intent is None and unknown.out_of_scope_score == 1.0
    # The confidence stays the top intent's probability, as the ranking shows it.
    assert unknown.confidence == unknown.ranking[0].confidence


def test_the_share_threshold_applies_to_the_discounted_probability(small_predictor: Predictor) -> None:
    text = "what time is it in zanzibar qwxz"
    top = with_coverage(small_predictor, 0.0).predict(text, top_k=1)
    assert top.intent == "ask_time"
    shares = with_coverage(small_predictor).shares([text])
    assert shares is not None
    discounted = top.confidence * float(shares[0])
    assert not with_coverage(small_predictor, discounted - 0.01).predict(text).out_of_scope
    rejected = with_coverage(small_predictor, discounted + 0.01).predict(text)
    assert rejected.out_of_scope and rejected.out_of_scope_score >= 0.5
    assert rejected.confidence == top.confidence  # the verdict leaves the probabilities alone


def test_the_compact_serving_form_quarters_the_tables_and_answers_as_fp32(
    small_model_dir: Path, small_predictor: Predictor, assistant_test: list[Example]
) -> None:
    """Serving loads the compact form (INTENTLY_QUANTIZE defaults to true): int8 tables, a scale
    for each row's part.
    It must answer as fp32 does: one agreement, one place."""
    from app.config import Settings
    from training.evaluate import evaluate

    assert Settings.model_fields["quantize"].default is True
    fp32, compact = small_predictor, Predictor.load(small_model_dir, quantize=True)
    runtime = compact.scorer
    assert isinstance(runtime, Runtime)
    for table in (runtime.words, runtime.subwords, runtime.bag):
        assert table is not None and table.values.dtype == np.int8 and table.scale is not None
    texts = [e.text for e in assistant_test]
    assert not np.array_equal(fp32.logits(texts), compact.logits(texts))  # compacted for real
    a, b = fp32.predict_batch(texts), compact.predict_batch(texts)
    same = sum(x.intent == y.intent for x, y in zip(a, b, strict=True)) / len(texts)
    gaps = [abs(x.confidence - y.confidence) for x, y in zip(a, b, strict=True)]
    assert same >= 0.98, same  # the verdict, out of scope included
    assert max(gaps) < 0.1 and sum(gaps) / len(gaps) < 0.02, (max(gaps), sum(gaps) / len(gaps))
    accuracy = [evaluate(p, assistant_test)["metrics"]["in_scope_accuracy"] for p in (fp32, compact)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.015, accuracy
