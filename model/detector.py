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

import torch
from torch import Tensor, nn


class KnownRows(nn.Module):
    """Unit feature vectors of training rows, grouped by intent, in half precision.

    `starts[k]..starts[k+1]` are intent k's rows. Stored as buffers, so they travel
    in `weights.safetensors` with the rest of the network.
    """

    def __init__(self, rows: int, dim: int, num_labels: int):
        super().__init__()
        self.register_buffer("bank", torch.zeros(rows, dim, dtype=torch.float16))
        # Float: the artifact loader accepts floating-point tensors only. Exact below 2**24.
        self.register_buffer("starts", torch.zeros(num_labels + 1))
        self._fp32: Tensor | None = None  # the bank in fp32 and the bounds as ints, made on first use
        self._bounds: list[int] = []

    def fill(self, features: Tensor, labels: Tensor, num_labels: int) -> None:
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=num_labels)
        self.bank = nn.functional.normalize(features[order].float(), dim=-1).half()
        self.starts = torch.cat([torch.zeros(1), counts.cumsum(0).float()])
        self._fp32 = None

    def similarity(self, features: Tensor, predicted: Tensor) -> Tensor:
        """[B]: cosine to the nearest training row of each row's predicted intent (-1: none)."""
        if self._fp32 is None:  # fp32 matmuls are much faster than fp16 ones on a CPU
            self._fp32 = self.bank.float()
            self._bounds = self.starts.long().tolist()
        bank, bounds = self._fp32, self._bounds
        features = features.float()
        norms = features.norm(dim=-1).clamp_min(1e-12)
        if len(features) == 1:  # the common case of one request: three tensor operations
            k = int(predicted[0])
            rows = bank[bounds[k] : bounds[k + 1]]
            return (rows @ features[0]).amax().reshape(1) / norms if len(rows) else torch.full((1,), -1.0)
        # Rows sorted by intent, so that each intent's rows are one contiguous slice.
        order = torch.argsort(predicted)
        grouped, grouped_norms = features[order], norms[order]
        near = torch.full((len(features),), -1.0)
        start = 0
        for k, count in enumerate(torch.bincount(predicted, minlength=len(bounds) - 1).tolist()):
            if count and bounds[k + 1] > bounds[k]:
                end = start + count
                dots = grouped[start:end] @ bank[bounds[k] : bounds[k + 1]].T
                near[start:end] = dots.amax(dim=1) / grouped_norms[start:end]
            start += count
        out = torch.empty_like(near)
        out[order] = near
        return out


@dataclass(frozen=True)
class DetectorParams:
    """How the two signals are standardised and where rejection starts (from validation)."""

    prob_mean: float
    prob_std: float
    near_mean: float
    near_std: float
    threshold: float  # on the sum of the two standardised signals

    def score(self, top_prob: Tensor, near: Tensor) -> Tensor:
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
