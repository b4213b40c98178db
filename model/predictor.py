"""Classify utterances with a loaded model: intent, confidence, ranking, out-of-scope verdict, entities.

Both the command line and the HTTP service call this; it is also the API for
classifying inside a user's own process:

    from model import Predictor
    Predictor.load("models/v1").predict("What time is it?").intent
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from model.artifact import ModelMeta, load
from model.coverage import WordCoverage
from model.detector import DetectorParams
from model.entities import FoundEntity, spans_of
from model.patterns import EntityPatterns
from model.runtime import HasWeights, Runtime, Scorer, Scores
from model.tokenizer import Encoded, Tokenizer, token_spans, tokenize


@dataclass(frozen=True)
class RankedIntent:
    intent: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    text: str
    intent: str | None  # None when out of scope
    confidence: float  # the top intent's calibrated probability: ranking[0].confidence, in scope or not
    out_of_scope: bool
    ranking: list[RankedIntent]
    model_version: str
    entities: list[FoundEntity] = field(default_factory=list)
    out_of_scope_score: float = 0.0  # the verdict's own score: at least 0.5 exactly when out of scope

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies recursively and is slow on a hot path.
        return {
            "text": self.text,
            "intent": self.intent,
            "confidence": self.confidence,
            "out_of_scope": self.out_of_scope,
            "out_of_scope_score": self.out_of_scope_score,
            "ranking": [{"intent": r.intent, "confidence": r.confidence} for r in self.ranking],
            "entities": [e.to_dict() for e in self.entities],
            "model_version": self.model_version,
        }


def verdicts(
    probs: np.ndarray,
    in_scope: np.ndarray,
    oos_index: int | None,
    threshold: float,
    shares: np.ndarray | None = None,
    coverage_threshold: float = 0.0,
    near: np.ndarray | None = None,
    detector: DetectorParams | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top in-scope label, its probability, out of scope?) per row.

    Out of scope when the `oos` class wins or no in-scope intent reaches the
    threshold, or (with known-word `shares`) when the top probability times the
    share falls under `coverage_threshold`, or (with the similarity `near` of each
    row to its intent's training rows) when the unknown-intent detector's score is
    under its threshold. Shared with training, which picks the thresholds with
    this same rule.
    """
    masked = np.where(in_scope, probs, np.float32(-1.0))
    top = masked.argmax(axis=-1)
    top_prob = masked[np.arange(len(masked)), top]
    rejected = top_prob < threshold
    if oos_index is not None:
        rejected |= probs[:, oos_index] > top_prob
    if shares is not None and coverage_threshold > 0:
        rejected |= top_prob * shares < coverage_threshold
    if near is not None and detector is not None:
        rejected |= detector.score(top_prob, near) < detector.threshold
    return top, top_prob, rejected


def out_of_scope_scores(
    probs: np.ndarray,
    top_prob: np.ndarray,
    rejected: np.ndarray,
    oos_index: int | None,
    threshold: float,
    shares: np.ndarray | None = None,
    coverage_threshold: float = 0.0,
    near: np.ndarray | None = None,
    detector: DetectorParams | None = None,
) -> np.ndarray:
    """The verdict's score per row, in 0..1: at least 0.5 exactly where `verdicts` said out of scope.

    Each rule of `verdicts` gives a margin, 0.5 at its threshold: a probability v under a
    threshold t maps linearly to 0.5 v / t, above it to 0.5 + 0.5 (v - t) / (1 - t); the
    `oos` class to top / (top + p_oos); the detector's standardised score s to sigmoid(s - its
    threshold). The score is one minus the smallest margin: how far the row sits on the
    out-of-scope side of the rule nearest to turning it away. Not a probability.
    """

    def margin(value: np.ndarray, t: float) -> np.ndarray:
        if t <= 0:
            return 0.5 + 0.5 * value
        return np.where(value < t, 0.5 * value / t, 0.5 + 0.5 * (value - t) / max(1.0 - t, 1e-9))

    top = top_prob.astype(np.float64)
    keep = margin(top, threshold)
    if oos_index is not None:
        keep = np.minimum(keep, top / np.maximum(top + probs[:, oos_index], 1e-12))
    if shares is not None and coverage_threshold > 0:
        keep = np.minimum(keep, margin(top * shares, coverage_threshold))
    if near is not None and detector is not None:
        z = np.asarray(detector.score(top_prob, near), dtype=np.float64) - detector.threshold
        keep = np.minimum(keep, 1.0 / (1.0 + np.exp(-z)))
    score = np.clip(1.0 - keep, 0.0, 1.0)
    # Where a value sits within rounding of its threshold, the verdict decides the side.
    return np.where(rejected, np.maximum(score, 0.5), np.minimum(score, 0.499999))


def known_shares(coverage: WordCoverage, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
    """Per tokenised text, the share of its words seen in training; shared with training."""
    return np.array([coverage.share(tokens) for tokens in token_lists], dtype=np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax over the last axis, in float32."""
    z = logits / np.float32(temperature)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


class Predictor:
    """A model's answers. `model` is what scores: a `Runtime` (numpy, what serving runs), a network
    that hands over its weights (training's IntentNet, run here by a `Runtime` made of them), or
    another `Scorer` (training's torch network, which the equality test and benchmarks compare with)."""

    def __init__(self, model: Scorer | HasWeights, meta: ModelMeta, tokenizer: Tokenizer):
        self.scorer: Scorer = Runtime(meta.model, model.weights()) if isinstance(model, HasWeights) else model
        self.meta = meta
        self.tokenizer = tokenizer
        self.labels = meta.labels
        self.oos_index = meta.labels.index(meta.oos_label) if meta.oos_label in meta.labels else None
        self.in_scope = np.array([i != self.oos_index for i in range(len(self.labels))])
        self.intents = [lab for i, lab in enumerate(self.labels) if i != self.oos_index]
        self.coverage = WordCoverage(meta.trained_vocab) if meta.coverage_threshold > 0 else None
        self.crf = self.scorer.crf
        self.entity_kinds = meta.entity_kinds
        self.patterns = EntityPatterns.build(meta.entity_regexes, meta.entity_lookups)

    @classmethod
    def load(cls, model_dir: str | Path, quantize: bool = False) -> Predictor:
        """`quantize`: the compact serving form, the lookup tables in int8 with a scale for each
        row's part (a quarter of their memory; the arithmetic stays fp32: docs/BENCHMARKS.md)."""
        weights, meta, tokenizer = load(model_dir)
        runtime = Runtime(meta.model, weights, int8_tables=quantize)
        del weights  # the runtime keeps its own (folded, reordered) copies
        return cls(runtime, meta, tokenizer)

    @property
    def version(self) -> str:
        return self.meta.version

    def logits(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Raw logits in input order; batches are sorted by length to limit padding."""
        encoded = [self.tokenizer.encode(t) for t in texts]
        return self.scorer.score(encoded, self.in_scope, batch_size).logits

    def _scores(self, encoded: Sequence[Encoded]) -> Scores:
        return self.scorer.score(encoded, self.in_scope, tags=self.crf is not None)

    def _entities(self, text: str, emissions: np.ndarray | None) -> list[FoundEntity]:
        found: list[FoundEntity] = []
        if self.crf is not None and emissions is not None:
            spans = token_spans(text, self.tokenizer.config)[: len(emissions)]
            if spans:
                path, confidence = self.crf.decode(emissions[: len(spans)])
                found = spans_of(path, confidence, spans, self.entity_kinds, text)
        if self.patterns:
            found = sorted(found + self.patterns.find(text, found), key=lambda e: e.start)
        synonyms = self.meta.entity_synonyms
        if synonyms:
            found = [replace(e, value=synonyms.get(e.value.casefold(), e.value)) for e in found]
        return found

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Calibrated class probabilities (temperature-scaled softmax)."""
        return softmax(self.logits(texts, batch_size), self.meta.temperature)

    def shares(self, texts: Sequence[str]) -> np.ndarray | None:
        """Known-word share per text (model/coverage.py), or None when the model does not use it."""
        if self.coverage is None:
            return None
        return known_shares(self.coverage, [tokenize(t, self.tokenizer.config) for t in texts])

    def predict(self, text: str, top_k: int = 5) -> Prediction:
        return self.predict_batch([text], top_k=top_k)[0]

    def predict_batch(self, texts: Sequence[str], top_k: int = 5) -> list[Prediction]:
        # Tokenised once: the network and the known-word share both read the tokens.
        config = self.tokenizer.config
        tokens = [tokenize(t, config) for t in texts]
        scored = self._scores([self.tokenizer.encode_tokens(t) for t in tokens])
        near, tag_scores = scored.near, scored.tags
        probs = softmax(scored.logits, self.meta.temperature)
        if not np.isfinite(probs).all():  # damaged weights: fail loudly, never answer NaN
            raise ValueError("the model produced non-finite scores; its weights may be damaged")
        shares = None if self.coverage is None else known_shares(self.coverage, tokens)
        top, top_prob, rejected = verdicts(
            probs,
            self.in_scope,
            self.oos_index,
            self.meta.threshold,
            shares,
            self.meta.coverage_threshold,
            near,
            self.meta.detector,
        )
        k = max(1, min(top_k, len(self.intents)))
        masked = np.where(self.in_scope, probs, np.float32(-1.0))
        # Stable sort of the negated scores: ties keep label order, as torch's topk does.
        ranked_i = np.argsort(-masked, axis=-1, kind="stable")[:, :k]
        ranked_p = masked[np.arange(len(masked))[:, None], ranked_i].astype(np.float64).round(6)
        # One meaning for every number (docs/api.md): `confidence` is the top intent's calibrated
        # probability, the ranking's first, out of scope or not; the verdict has a score of its own.
        meta = self.meta
        oos_score = out_of_scope_scores(
            probs, top_prob, rejected, self.oos_index, meta.threshold, shares, meta.coverage_threshold, near,
            meta.detector,
        ).round(6)  # fmt: skip
        # Rounded to 6 places in float64, once for the whole batch: cheaper than round() on each.
        confidence = top_prob.astype(np.float64).round(6)
        labels, version = self.labels, self.version
        entities = None
        if tag_scores or self.patterns:
            scores: list[np.ndarray | None] = list(tag_scores) if tag_scores else [None] * len(texts)
            entities = [self._entities(t, s) for t, s in zip(texts, scores, strict=True)]
        return [
            Prediction(
                text=text,
                intent=None if out else labels[t],
                confidence=c,
                out_of_scope=out,
                ranking=[RankedIntent(labels[i], p) for p, i in zip(ps, ids, strict=True)],
                model_version=version,
                entities=[] if entities is None else entities[n],
                out_of_scope_score=score,
            )
            for n, (text, t, c, out, ps, ids, score) in enumerate(
                zip(
                    texts,
                    top.tolist(),
                    confidence.tolist(),
                    rejected.tolist(),
                    ranked_p.tolist(),
                    ranked_i.tolist(),
                    oos_score.tolist(),
                    strict=True,
                )
            )
        ]
