"""The BIO tag scheme, the CRF's loss and its decoder, on hand-made cases."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch

from model.entities import Crf, FoundEntity, allowed, constrained, spans_of, tag_names, tags_of
from model.tokenizer import token_spans, tokenize
from training.markup import Entity
from training.network import constrained as torch_constrained
from training.network import crf_loss

TYPES = ["time", "city"]  # tags: O, B-time, I-time, B-city, I-city
KINDS = [(t, None, None) for t in TYPES]
INDEX = {kind: k for k, kind in enumerate(KINDS)}


def test_tag_names_and_tags_of_spans() -> None:
    assert tag_names(TYPES) == ["O", "B-time", "I-time", "B-city", "I-city"]
    text = "fly to new york at 6:30"
    tokens = token_spans(text)
    entities = [Entity(7, 15, "city", "new york"), Entity(19, 23, "time", "6:30")]
    assert tags_of(tokens, entities, INDEX) == [0, 0, 3, 4, 0, 1]


def test_a_span_that_cuts_a_token_takes_the_whole_token_and_a_second_type_of_one_span_is_skipped() -> None:
    tokens = token_spans("at 6:30pm")  # "at", "6:30", "pm"
    cut = [Entity(3, 5, "time", "6:"), Entity(3, 5, "city", "6:")]
    assert tags_of(tokens, cut, INDEX) == [0, 1, 0]


def test_a_role_or_group_is_a_tag_type_of_its_own_and_comes_back_with_the_span() -> None:
    text = "from paris to rome"
    tokens = token_spans(text)
    spans = [
        Entity(5, 10, "city", "paris", role="from"),
        Entity(14, 18, "city", "rome", role="to", group="1"),
    ]
    kinds: list = [("city", "from", None), ("city", "to", "1")]
    tags = tags_of(tokens, spans, {k: i for i, k in enumerate(kinds)})
    assert tags == [0, 1, 0, 3]
    found = spans_of(tags, [1.0] * 4, tokens, kinds, text)
    assert [(e.value, e.role, e.group) for e in found] == [("paris", "from", None), ("rome", "to", "1")]
    assert found[1].to_dict()["role"] == "to" and "role" not in FoundEntity("t", "x", 0, 1, 1.0).to_dict()


def test_token_spans_point_into_the_text_as_sent() -> None:
    for text in ["Wake me at 6:30, please!", "ﬁnd Café\tZürich", "don’t  stop", "a\x00b c"]:
        spans = token_spans(text)
        assert len(spans) == len(tokenize(text))
        assert [text[s:e].casefold().replace("’", "'").replace("ﬁ", "fi") for s, e in spans] == tokenize(text)


def test_bio_rule() -> None:
    first, after = allowed(2)
    assert first.tolist() == [True, True, False, True, False]
    assert after[1, 2] and after[2, 2] and not after[0, 2] and not after[3, 2] and not after[1, 4]
    assert after[:, [0, 1, 3]].all()  # O and any B- may follow anything


def _paths(steps: int, size: int) -> list[tuple[int, ...]]:
    return list(itertools.product(range(size), repeat=steps))


def _path_score(path: tuple[int, ...], em: Any, start: Any, moves: Any, end: Any) -> Any:
    total = start[path[0]] + em[0, path[0]] + end[path[-1]]
    return total + sum(moves[a, b] + em[i + 1, b] for i, (a, b) in enumerate(itertools.pairwise(path)))


def test_crf_loss_is_the_negative_log_likelihood_by_enumeration() -> None:
    torch.manual_seed(0)
    em = torch.randn(2, 4, 5)
    start, moves, end = torch_constrained(torch.randn(5), torch.randn(5, 5), torch.randn(5), 2)
    tags = torch.tensor([[1, 2, 0, 3], [3, 4, 0, 0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    expected = []
    for row, steps in ((0, 4), (1, 3)):
        scores = torch.stack([_path_score(p, em[row], start, moves, end) for p in _paths(steps, 5)])
        gold = _path_score(tuple(tags[row, :steps].tolist()), em[row], start, moves, end)
        expected.append(torch.logsumexp(scores, 0) - gold)
    assert float(crf_loss(em, tags, mask, start, moves, end)) == pytest.approx(
        float(sum(expected) / 2), abs=1e-5
    )


def test_decoder_finds_the_best_valid_path_and_never_an_invalid_one() -> None:
    rng = np.random.default_rng(1)
    first, after = allowed(2)
    for _ in range(20):
        raw = (rng.standard_normal(5), rng.standard_normal((5, 5)), rng.standard_normal(5))
        start, moves, end = constrained(*raw, 2)
        em = rng.standard_normal((4, 5)) * 2
        best = max(_paths(4, 5), key=lambda p: float(_path_score(p, em, start, moves, end)))
        path, confidence = Crf(start, moves, end).decode(em)
        assert tuple(path) == best
        assert first[path[0]] and all(after[a, b] for a, b in itertools.pairwise(path))
        assert all(0 < c <= 1 for c in confidence)
    # Token scores that alone say "I-city" first: the rule still opens the span with B-.
    em = np.log(np.array([[0.01, 0.01, 0.01, 0.02, 0.95], [0.9, 0.025, 0.025, 0.025, 0.025]]))
    path, _ = Crf(*constrained(np.zeros(5), np.zeros((5, 5)), np.zeros(5), 2)).decode(em)
    assert path[0] != 4 and first[path[0]]

    # A span whose first token scores "I-time" far above "B-time" (the I- score after "O" is
    # never trained down): pruning by score alone lost the B- and with it the whole span.
    em = np.array([[0.0, -13.0, 5.0, -20.0, -20.0], [0.0, -20.0, 20.0, -20.0, -20.0]])
    path, _ = Crf(*constrained(np.zeros(5), np.zeros((5, 5)), np.zeros(5), 2)).decode(em)
    assert path == [1, 2]


def test_spans_of_a_tag_sequence() -> None:
    text = "fly to new york at 6:30"
    tokens = token_spans(text)
    found = spans_of([0, 0, 3, 4, 0, 1], [1.0, 1.0, 0.9, 0.7, 1.0, 0.5], tokens, KINDS, text)
    assert found == [FoundEntity("city", "new york", 7, 15, 0.8), FoundEntity("time", "6:30", 19, 23, 0.5)]
    # Two spans of one type side by side stay two.
    assert [
        e.value for e in spans_of([3, 3], [1.0, 1.0], token_spans("paris rome"), KINDS, "paris rome")
    ] == [
        "paris",
        "rome",
    ]
