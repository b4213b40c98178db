from __future__ import annotations

from model.config import TokenizerConfig
from model.tokenizer import PAD, UNK, UNK_ID, Tokenizer, char_ngrams, normalize, stable_hash, tokenize


def test_words_numbers_contractions_punctuation() -> None:
    assert tokenize("What's the time at 6:30, 3.5 or 1,000?") == [
        "what's",
        "the",
        "time",
        "at",
        "6:30",
        ",",
        "3.5",
        "or",
        "1,000",
        "?",
    ]


def test_case_folding_and_nfkc() -> None:
    assert tokenize("ＷＨＡＴ ﬁne STRASSE Straße") == ["what", "fine", "strasse", "strasse"]


def test_curly_apostrophes_are_unified() -> None:
    assert tokenize("don’t") == tokenize("don't") == ["don't"]


def test_empty_and_control_only() -> None:
    assert tokenize("") == []
    assert tokenize(" \t\n\x00\u200b ") == []


def test_emoji_and_mixed_scripts() -> None:
    assert tokenize("play 🎵 música Привет 音楽を") == ["play", "🎵", "música", "привет", "音", "楽", "を"]
    assert tokenize("مرحبا بك") == ["مرحبا", "بك"]


def test_very_long_input_is_truncated() -> None:
    config = TokenizerConfig(max_tokens=64)
    assert len(tokenize("word " * 100_000, config)) == 64


def test_char_ngrams_mark_word_boundaries() -> None:
    assert char_ngrams("hi", 3, 3) == ["<hi", "hi>"]


def test_stable_hash_is_process_independent() -> None:
    # crc32: fixed by the algorithm, not by the process's hash seed.
    assert stable_hash("abc") == 891568578


def test_vocabulary_and_unknown_words_keep_ngrams() -> None:
    tok = Tokenizer.build(["what is the weather", "what time is it"], TokenizerConfig(ngram_buckets=1000))
    assert tok.vocab[:2] == [PAD, UNK]
    known = tok.encode("weather")
    typo = tok.encode("wether")
    assert known.words[0] != UNK_ID and typo.words == [UNK_ID]
    # The typo shares character n-grams with the known word: that is its signal.
    assert set(known.ngrams[0]) & set(typo.ngrams[0])


def test_blank_text_encodes_as_one_unknown_token() -> None:
    tok = Tokenizer.build(["hello"], TokenizerConfig())
    enc = tok.encode("   ")
    assert enc.words == [UNK_ID] and enc.ngrams == [[]]


def test_normalize_keeps_text_without_controls() -> None:
    assert normalize("a\x07b") == "a b"
