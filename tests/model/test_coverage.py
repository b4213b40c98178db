from __future__ import annotations

import pytest

from model.coverage import WordCoverage
from model.tokenizer import tokenize

VOCAB = ["<pad>", "<unk>", "what", "is", "the", "weather", "like", "today", "send", "money", "?", "5"]


@pytest.fixture
def coverage() -> WordCoverage:
    return WordCoverage(VOCAB)


def share(coverage: WordCoverage, text: str) -> float:
    return coverage.share(tokenize(text))


def test_share_counts_words_seen_in_training(coverage: WordCoverage) -> None:
    assert share(coverage, "what is the weather like today?") == 1.0
    assert share(coverage, "play some jazz music") == 0.0
    assert share(coverage, "send money to jazz club") == pytest.approx(2 / 5)


@pytest.mark.parametrize("typo", ["wether", "weahter", "weathers", "wezther", "mnoey", "monye"])
def test_one_typo_in_a_long_word_still_counts_as_seen(coverage: WordCoverage, typo: str) -> None:
    assert coverage.seen(typo)


def test_short_words_and_two_typos_are_not_matched(coverage: WordCoverage) -> None:
    assert not coverage.seen("thy")  # "the" is too short to match loosely
    assert coverage.seen("snd")  # "send" is not
    assert not coverage.seen("wehtr")  # two edits from "weather"
    assert not coverage.seen("weathered")
    assert coverage.seen("feather")  # one edit from "weather": the price of typo tolerance


def test_numbers_punctuation_and_empty_input_do_not_count(coverage: WordCoverage) -> None:
    assert share(coverage, "5 ? 42 !!") == 1.0
    assert share(coverage, "") == 1.0
    assert share(coverage, "what 123 zzzq") == 0.5


def test_a_huge_token_is_unseen_and_cheap(coverage: WordCoverage) -> None:
    assert share(coverage, "x" * 1_000_000) == 0.0


def test_new_tokens_are_remembered_only_while_short_and_few(coverage: WordCoverage) -> None:
    before = len(coverage._status)
    share(coverage, "zebra " + "y" * 100)
    assert len(coverage._status) == before + 1  # "zebra" kept, the long token not
