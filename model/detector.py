"""Unknown intents: how far an utterance is from the training rows of the intent it was given.

A classifier always names one of the intents it knows, even for a request of an
intent nobody wrote examples of. Two signals say "none of these": the calibrated
top probability (MSP), and the cosine similarity of the utterance's pooled
features to the nearest training row of the predicted intent (a k-NN distance,
Sun et al. 2022). Each alone caught fewer unknown requests than the two added,
each standardised by its mean and spread on validation rows (docs/RESEARCH.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def nearest(bank: np.ndarray, bounds: list[int], features: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[B]: cosine of each row's features to the nearest training row of its predicted intent (-1: none).

    `bank`: unit feature vectors of training rows grouped by intent, intent k's rows
    `bounds[k]..bounds[k+1]` (training/network.py's `KnownRows` keeps them in the artifact).
    """
    features = features.astype(np.float32, copy=False)
    norms = np.maximum(np.sqrt((features * features).sum(axis=-1)), 1e-12)
    near = np.full(len(features), -1.0, dtype=np.float32)
    if len(features) == 1:  # the common case of one request: one product
        k = int(predicted[0])
        rows = bank[bounds[k] : bounds[k + 1]]
        if len(rows):
            near[0] = (rows @ features[0]).max() / norms[0]
        return near
    # Rows sorted by intent, so that each intent's rows are one contiguous slice.
    order = np.argsort(predicted, kind="stable")
    grouped, grouped_norms = features[order], norms[order]
    out = np.full(len(features), -1.0, dtype=np.float32)
    start = 0
    for k, count in enumerate(np.bincount(predicted, minlength=len(bounds) - 1).tolist()):
        if count and bounds[k + 1] > bounds[k]:
            end = start + count
            dots = grouped[start:end] @ bank[bounds[k] : bounds[k + 1]].T
            out[start:end] = dots.max(axis=1) / grouped_norms[start:end]
        start += count
    near[order] = out
    return near


@dataclass(frozen=True)
class DetectorParams:
    """How the two signals are standardised and where rejection starts (from validation)."""

    prob_mean: float
    prob_std: float
    near_mean: float
    near_std: float
    threshold: float  # on the sum of the two standardised signals

    def score(self, top_prob: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Higher is more like a known intent."""
        return (top_prob - self.prob_mean) / self.prob_std + (near - self.near_mean) / self.near_std

    def to_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 6) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, raw: Any) -> DetectorParams:
        if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
            raise ValueError(f"'detector' must be an object with keys {sorted(cls.__dataclass_fields__)}")
        values = {}
        for key, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"'detector.{key}' must be a finite number")
            values[key] = float(value)
        if values["prob_std"] <= 0 or values["near_std"] <= 0:
            raise ValueError("'detector' spreads must be positive")
        return cls(**values)
