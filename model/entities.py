"""Entities as BIO tags over tokens: spans to tags for training, tags back to spans when served.

Tag 0 is "O" (outside); entity type k has tags 1 + 2k ("B-", its first token) and
2 + 2k ("I-", the rest). A linear-chain CRF scores a tag sequence as the tokens'
tag scores plus learned scores of each tag following another (Lafferty et al. 2001;
Lample et al. 2016 on recurrent states); a sequence in which an I- tag does not
continue a span of its type scores minus infinity, so decoding never emits one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

OUTSIDE = "O"


class Span(Protocol):
    # Read-only members, so that frozen dataclasses (training's Entity) satisfy it.
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity(self) -> str: ...
    @property
    def role(self) -> str | None: ...
    @property
    def group(self) -> str | None: ...


# A tag type: the entity type with the role and group it was annotated with (Rasa's
# `{"entity": "city", "role": "departure"}`), so that roles cost tags, not another layer.
Kind = tuple[str, str | None, str | None]


def kind_of(span: Span) -> Kind:
    return (span.entity, span.role, span.group)


@dataclass(frozen=True)
class FoundEntity:
    """An entity in an answer: a typed span of the text sent, with the tagger's confidence."""

    entity: str
    value: str
    start: int
    end: int
    confidence: float
    role: str | None = None
    group: str | None = None
    by_pattern: bool = False  # found by a regex or lookup table (model/patterns.py), not the tagger

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "entity": self.entity,
            "value": self.value,
            "start": self.start,
            "end": self.end,
            "confidence": self.confidence,
        }
        if self.role is not None:
            out["role"] = self.role
        if self.group is not None:
            out["group"] = self.group
        return out


def tag_names(types: Sequence[str]) -> list[str]:
    return [OUTSIDE, *(f"{prefix}-{t}" for t in types for prefix in ("B", "I"))]


def tags_of(tokens: Sequence[tuple[int, int]], entities: Sequence[Span], types: dict[Kind, int]) -> list[int]:
    """The tag of each token (character spans `tokens`): a token any part of a span touches is in it.

    Of several annotations of one span the first is taught (one tag a token).
    """
    tags = [0] * len(tokens)
    for e in entities:
        inside = [i for i, (s, t) in enumerate(tokens) if s < e.end and t > e.start]
        if not inside or any(tags[i] for i in inside):
            continue
        k = types[kind_of(e)]
        tags[inside[0]] = 1 + 2 * k
        for i in inside[1:]:
            tags[i] = 2 + 2 * k
    return tags


# Far below any learned score, finite so that log-sum-exp over all-forbidden rows stays finite.
FORBIDDEN = -1e4


def allowed(num_types: int) -> tuple[np.ndarray, np.ndarray]:
    """(first[j], after[i, j]): which tag may open a sequence, and which may follow tag i."""
    size = 1 + 2 * num_types
    inside = np.zeros(size, dtype=bool)
    inside[2::2] = True
    after = np.ones((size, size), dtype=bool)
    for k in range(num_types):
        i_tag = 2 + 2 * k
        after[:, i_tag] = False
        after[[i_tag - 1, i_tag], i_tag] = True  # I-x only after B-x or I-x
    return ~inside, after


def constrained(
    start: np.ndarray, transitions: np.ndarray, end: np.ndarray, num_types: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The learned CRF scores with every move the BIO rule forbids set to FORBIDDEN."""
    first, after = allowed(num_types)
    return np.where(first, start, FORBIDDEN), np.where(after, transitions, FORBIDDEN), end


# A tag whose token score is this far under the token's best is left out of the lattice
# (a factor of e^-12 in probability): most tokens keep one or two, so decoding stays small.
MARGIN = 12.0
# And at most this many a token, or an unsure (little-trained) tagger keeps them all and decoding crawls.
CANDIDATES = 8


class Crf:
    """A trained CRF's scores, the BIO rule's forbidden moves set, ready for decoding."""

    def __init__(self, start: np.ndarray, transitions: np.ndarray, end: np.ndarray):
        self.start = start.tolist()
        self.transitions = transitions.tolist()  # [from][to]: read a cell at a time
        self.end = end.tolist()

    def decode(self, emissions: np.ndarray) -> tuple[list[int], list[float]]:
        """The best-scoring valid tag sequence of [L, tags] token scores (Viterbi), and each tag's confidence.

        "O" stays in every token's lattice, so a valid path always exists. Confidence of a
        tag: its probability given the tag before it, under the CRF.
        """
        keep = emissions >= emissions.max(axis=1, keepdims=True) - MARGIN
        if emissions.shape[1] > CANDIDATES:
            # An unsure tagger keeps many tags; the best CANDIDATES bound the Python work a token.
            ranked = np.argsort(-emissions, axis=1)[:, CANDIDATES:]
            np.put_along_axis(keep, ranked, False, axis=1)
        keep[:, 0] = True
        # A kept I- tag brings its B-: its score after "O" is never trained down (the rule
        # forbids that move), so it can outrank the B- its span must open with.
        keep[:, 1::2] |= keep[:, 2::2]
        rows, cols = np.nonzero(keep)
        values = emissions[rows, cols].tolist()
        cand: list[list[int]] = [[] for _ in range(len(emissions))]
        gain: list[list[float]] = [[] for _ in range(len(emissions))]
        for r, c, v in zip(rows.tolist(), cols.tolist(), values, strict=True):
            cand[r].append(c)
            gain[r].append(v)
        moves = self.transitions
        score = [self.start[j] + g for j, g in zip(cand[0], gain[0], strict=True)]
        back: list[list[int]] = []
        for t in range(1, len(cand)):
            prev, new_score, pointers = cand[t - 1], [], []
            for j, g in zip(cand[t], gain[t], strict=True):
                options = [score[i] + moves[p][j] for i, p in enumerate(prev)]
                best = max(range(len(options)), key=options.__getitem__)
                new_score.append(options[best] + g)
                pointers.append(best)
            score = new_score
            back.append(pointers)
        final = [sc + self.end[j] for sc, j in zip(score, cand[-1], strict=True)]
        pick = max(range(len(final)), key=final.__getitem__)
        picks = [pick]
        for pointers in reversed(back):
            pick = pointers[pick]
            picks.append(pick)
        picks.reverse()
        path = [cand[t][i] for t, i in enumerate(picks)]
        confidence = []
        for t, i in enumerate(picks):
            before = self.start if t == 0 else moves[path[t - 1]]
            local = [g + before[j] for j, g in zip(cand[t], gain[t], strict=True)]
            top = max(local)
            weights = [math.exp(x - top) for x in local]
            confidence.append(weights[i] / sum(weights))
        return path, confidence


def spans_of(
    tags: Sequence[int],
    confidence: Sequence[float],
    tokens: Sequence[tuple[int, int]],
    types: Sequence[Kind],
    text: str,
) -> list[FoundEntity]:
    """Spans of a valid tag sequence; confidence: the mean probability (`probs` [L, tags]) of its tags."""
    found: list[FoundEntity] = []
    open_at: int | None = None
    for i in range(len(tags) + 1):
        tag = tags[i] if i < len(tags) else 0
        continues = open_at is not None and tag != 0 and tag % 2 == 0 and tag - 1 == tags[open_at]
        if open_at is not None and not continues:
            start, end = tokens[open_at][0], tokens[i - 1][1]
            entity, role, group = types[(tags[open_at] - 1) // 2]
            score = round(sum(confidence[open_at:i]) / (i - open_at), 4)
            found.append(FoundEntity(entity, text[start:end], start, end, score, role, group))
            open_at = None
        if tag % 2 == 1:
            open_at = i
    return found
