"""Classify utterances with a loaded model: intent, confidence, ranking, out-of-scope verdict, entities.

Both the command line and the HTTP service call this; it is also the API for
classifying inside a user's own process:

    from model import Predictor
    Predictor.load("models/v1").predict("What time is it?").intent
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model.artifact import ModelMeta, load
from model.coverage import WordCoverage
from model.detector import DetectorParams
from model.entities import Crf, FoundEntity, spans_of
from model.network import Batch, IntentNet
from model.patterns import EntityPatterns
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
    probs: Tensor,
    in_scope: Tensor,
    oos_index: int | None,
    threshold: float,
    shares: Tensor | None = None,
    coverage_threshold: float = 0.0,
    near: Tensor | None = None,
    detector: DetectorParams | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(top in-scope label, its probability, out of scope?) per row, as tensors.

    Out of scope when the `oos` class wins or no in-scope intent reaches the
    threshold, or (with known-word `shares`) when the top probability times the
    share falls under `coverage_threshold`, or (with the similarity `near` of each
    row to its intent's training rows) when the unknown-intent detector's score is
    under its threshold. Shared with training, which picks the thresholds with
    this same rule.
    """
    top_prob, top = probs.masked_fill(~in_scope, -1.0).max(dim=-1)
    rejected = top_prob < threshold
    if oos_index is not None:
        rejected |= probs[:, oos_index] > top_prob
    if shares is not None and coverage_threshold > 0:
        rejected |= top_prob * shares < coverage_threshold
    if near is not None and detector is not None:
        rejected |= detector.score(top_prob, near) < detector.threshold
    return top, top_prob, rejected


def out_of_scope_scores(
    probs: Tensor,
    top_prob: Tensor,
    rejected: Tensor,
    oos_index: int | None,
    threshold: float,
    shares: Tensor | None = None,
    coverage_threshold: float = 0.0,
    near: Tensor | None = None,
    detector: DetectorParams | None = None,
) -> Tensor:
    """The verdict's score per row, in 0..1: at least 0.5 exactly where `verdicts` said out of scope.

    Each rule of `verdicts` gives a margin, 0.5 at its threshold: a probability v under a
    threshold t maps linearly to 0.5 v / t, above it to 0.5 + 0.5 (v - t) / (1 - t); the
    `oos` class to top / (top + p_oos); the detector's standardised score s to sigmoid(s - its
    threshold). The score is one minus the smallest margin: how far the row sits on the
    out-of-scope side of the rule nearest to turning it away. Not a probability.
    """

    def margin(value: Tensor, t: float) -> Tensor:
        if t <= 0:
            return 0.5 + 0.5 * value
        return torch.where(value < t, 0.5 * value / t, 0.5 + 0.5 * (value - t) / max(1.0 - t, 1e-9))

    keep = margin(top_prob, threshold)
    if oos_index is not None:
        keep = torch.minimum(keep, top_prob / (top_prob + probs[:, oos_index]).clamp_min(1e-12))
    if shares is not None and coverage_threshold > 0:
        keep = torch.minimum(keep, margin(top_prob * shares, coverage_threshold))
    if near is not None and detector is not None:
        keep = torch.minimum(keep, torch.sigmoid(detector.score(top_prob, near) - detector.threshold))
    score = (1.0 - keep).clamp(0.0, 1.0)
    # Where a value sits within rounding of its threshold, the verdict decides the side.
    return torch.where(rejected, score.clamp_min(0.5), score.clamp_max(0.499999))


def known_shares(coverage: WordCoverage, token_lists: Sequence[Sequence[str]]) -> Tensor:
    """Per tokenised text, the share of its words seen in training; shared with training."""
    return torch.tensor([coverage.share(tokens) for tokens in token_lists])


def quantize_dynamic(net: IntentNet, inplace: bool = False) -> IntentNet:
    """int8 weights for LSTM/GRU and linear layers, activations quantized on the fly.

    About twice as fast on a CPU (docs/BENCHMARKS.md). A plain tanh RNN has no
    quantized kernel, so only its linear layer is converted.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        from torch.ao.quantization import quantize_dynamic as _quantize

        layers = {nn.LSTM, nn.GRU, nn.Linear}
        # In place: no second copy of the embedding tables while quantizing.
        quantized: IntentNet = _quantize(net, layers, dtype=torch.qint8, inplace=inplace)
        return quantized


@dataclass
class NetworkScores:
    logits: Tensor  # [rows, labels]
    near: Tensor | None  # each row's similarity to its top intent's training rows (with a detector)
    tags: list[Tensor]  # each row's tag logits [tokens, tags] (when asked, with a tagger)
    features: Tensor | None  # the pooled features (when asked)


def run_network(
    net: IntentNet,
    encoded: Sequence[Encoded],
    in_scope: Tensor | None = None,
    batch_size: int = 256,
    tags: bool = False,
    features: bool = False,
) -> NetworkScores:
    """The network on encoded utterances in evaluation mode, in batches of similar length (less padding);
    results in input order. Serving and training (validation, calibration) both score through here."""
    net.eval()
    n = len(encoded)
    logits = torch.empty(n, net.cfg.num_labels)
    # The detector's similarity needs the top in-scope intent, hence `in_scope`.
    near = torch.empty(n) if net.detector is not None and in_scope is not None else None
    kept = torch.empty(n, net.encoder.out_dim) if features else None
    tag_rows: list[Tensor] = [torch.empty(0)] * n if tags and net.tagger is not None else []
    order = sorted(range(n), key=lambda i: len(encoded[i].words))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = Batch.from_encoded([encoded[i] for i in idx])
            lo, fe, tag_logits = net.analyse(batch, tags=bool(tag_rows))
            logits[idx] = lo
            if kept is not None:
                kept[idx] = fe
            if near is not None and net.detector is not None and in_scope is not None:
                top = lo.masked_fill(~in_scope, -math.inf).argmax(dim=-1)
                near[idx] = net.detector.similarity(fe, top)
            if tag_logits is not None:
                for i, piece in zip(idx, tag_logits.split(batch.lengths.tolist()), strict=True):
                    tag_rows[i] = piece
    return NetworkScores(logits, near, tag_rows, kept)


class Predictor:
    def __init__(self, net: IntentNet, meta: ModelMeta, tokenizer: Tokenizer):
        self.net = net.eval()
        self.net.embed.fold()
        self.meta = meta
        self.tokenizer = tokenizer
        self.labels = meta.labels
        self.oos_index = meta.labels.index(meta.oos_label) if meta.oos_label in meta.labels else None
        self.in_scope = torch.tensor([i != self.oos_index for i in range(len(self.labels))])
        self.intents = [lab for i, lab in enumerate(self.labels) if i != self.oos_index]
        self.coverage = WordCoverage(meta.trained_vocab) if meta.coverage_threshold > 0 else None
        self.crf = None
        if net.tagger is not None:
            with torch.no_grad():
                self.crf = Crf(*net.crf_scores())
        self.entity_kinds = meta.entity_kinds
        self.patterns = EntityPatterns.build(meta.entity_regexes, meta.entity_lookups)

    @classmethod
    def load(cls, model_dir: str | Path, quantize: bool = False) -> Predictor:
        """`quantize`: the compact serving form: int8 dynamic quantization of the recurrent and
        linear layers (CPU speed-up) and the lookup tables in half precision (half their memory)."""
        net, meta, tokenizer = load(model_dir)
        predictor = cls(quantize_dynamic(net, inplace=True) if quantize else net, meta, tokenizer)
        predictor.net.embed.release_parts()  # this Predictor owns the network and only serves
        if quantize:
            predictor.net.half_tables()
        return predictor

    @property
    def version(self) -> str:
        return self.meta.version

    def logits(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Raw logits in input order; batches are sorted by length to limit padding."""
        encoded = [self.tokenizer.encode(t) for t in texts]
        return run_network(self.net, encoded, self.in_scope, batch_size).logits

    def _scores(self, encoded: Sequence[Encoded]) -> NetworkScores:
        return run_network(self.net, encoded, self.in_scope, tags=self.crf is not None)

    def _entities(self, text: str, emissions: Tensor | None) -> list[FoundEntity]:
        found: list[FoundEntity] = []
        if self.crf is not None and emissions is not None:
            spans = token_spans(text, self.tokenizer.config)[: len(emissions)]
            if spans:
                path, confidence = self.crf.decode(emissions[: len(spans)].numpy())
                found = spans_of(path, confidence, spans, self.entity_kinds, text)
        if self.patterns:
            found = sorted(found + self.patterns.find(text, found), key=lambda e: e.start)
        synonyms = self.meta.entity_synonyms
        if synonyms:
            found = [replace(e, value=synonyms.get(e.value.casefold(), e.value)) for e in found]
        return found

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> Tensor:
        """Calibrated class probabilities (temperature-scaled softmax)."""
        return torch.softmax(self.logits(texts, batch_size) / self.meta.temperature, dim=-1)

    def shares(self, texts: Sequence[str]) -> Tensor | None:
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
        logits, near, tag_scores = scored.logits, scored.near, scored.tags
        probs = torch.softmax(logits / self.meta.temperature, dim=-1)
        if not bool(torch.isfinite(probs).all()):  # damaged weights: fail loudly, never answer NaN
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
        ranked_p, ranked_i = probs.masked_fill(~self.in_scope, -1.0).topk(k, dim=-1)
        # One meaning for every number (docs/api.md): `confidence` is the top intent's calibrated
        # probability, the ranking's first, out of scope or not; the verdict has a score of its own.
        meta = self.meta
        oos_score = out_of_scope_scores(
            probs, top_prob, rejected, self.oos_index, meta.threshold, shares, meta.coverage_threshold, near,
            meta.detector,
        ).double().round(decimals=6)  # fmt: skip
        # Rounded to 6 places in float64 by torch, once for the whole batch: cheaper than round() on each.
        confidence = top_prob.double().round(decimals=6)
        ranked_p = ranked_p.double().round(decimals=6)
        labels, version = self.labels, self.version
        entities = None
        if tag_scores or self.patterns:
            scores: Sequence[Tensor | None] = tag_scores or [None] * len(texts)
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
