"""Property tests: the tokenizer, the readers and the Predictor never crash, whatever they are fed.

Bounded example counts and derandomized, so the suite stays quick and a
failure reproduces on every run.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.config import TokenizerConfig
from model.predictor import Predictor
from model.tokenizer import UNK_ID, Tokenizer, tokenize
from tests.peak_memory import peak_growth_mb
from training.readers import MAX_TEXT_CHARS, DataError, parse_bytes

QUICK = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Every code point hypothesis can make, surrogates and controls included.
ANY_TEXT = st.text(st.characters(codec=None), max_size=300)
# Characters that steer the parsers into their corners: quotes, separators, YAML syntax.
SYNTAX = st.text(st.sampled_from(list("text,intent\n\r\"'- :[]{}&*!|>#%@\t\\é🙂\x00\ufeff")), max_size=400)


@QUICK
@given(ANY_TEXT)
def test_tokenize_any_text(text: str) -> None:
    tokens = tokenize(text)
    assert len(tokens) <= TokenizerConfig().max_tokens
    assert all(isinstance(t, str) and t and not t.isspace() for t in tokens)


@QUICK
@given(ANY_TEXT)
def test_encode_keeps_every_id_in_range(text: str) -> None:
    config = TokenizerConfig(ngram_buckets=1000)
    tok = Tokenizer.build(["what time is it", "play some music"], config, bag_buckets=500)
    enc = tok.encode(text)
    assert enc.words and all(0 < w < len(tok) for w in enc.words)  # never the padding id
    assert all(1 <= g <= 1000 for grams in enc.ngrams for g in grams)
    assert all(1 <= b <= 500 for b in enc.bag)
    assert len(enc.ngrams) == len(enc.words)
    if not tokenize(text, config):
        assert enc.words == [UNK_ID]


def _check_predictions(predictor: Predictor, texts: list[str], top_k: int) -> None:
    results = predictor.predict_batch(texts, top_k=top_k)
    assert [r.text for r in results] == texts
    for r in results:
        assert 0.0 <= r.confidence <= 1.0
        assert (r.intent is None) == r.out_of_scope
        assert 1 <= len(r.ranking) <= min(top_k, len(predictor.intents)) or top_k < 1
        confidences = [x.confidence for x in r.ranking]
        assert confidences == sorted(confidences, reverse=True)
        assert all(x.intent in predictor.intents for x in r.ranking)


@QUICK
@given(st.lists(ANY_TEXT, min_size=1, max_size=8), st.integers(min_value=1, max_value=200))
def test_predictor_any_batch(small_predictor: Predictor, texts: list[str], top_k: int) -> None:
    _check_predictions(small_predictor, texts, top_k)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " " * 10_000,
        "\ud800\udfff",  # lone surrogates
        "a" * 10_000_000,  # one 10 MB "word"
        "word " * 1_000_000,  # 5 MB of words
        "🙂" * 100_000,
        "\u0301" * 100_000,  # combining marks with nothing to combine with
        "ﷺ" * 20_000,  # NFKC expands it 18-fold
    ],
    ids=["empty", "spaces", "surrogates", "10MB-token", "5MB-words", "emoji", "combining", "nfkc-expands"],
)
def test_predictor_huge_and_empty_inputs(small_predictor: Predictor, text: str) -> None:
    started = time.monotonic()
    _, grew_mb = peak_growth_mb(lambda: _check_predictions(small_predictor, [text, "What time is it?"], 3))
    # Bounded work: the tokenizer keeps 64 tokens and 24 n-grams per token, whatever the input,
    # so memory grows by a few copies of the text at most (10 MB here), not by its n-grams.
    if grew_mb is not None:
        assert grew_mb < 500, f"{grew_mb:.0f} MB"
    assert time.monotonic() - started < 300  # a hang guard; speed is bench's to measure


def _parse_or_data_error(raw: bytes, fmt: str) -> None:
    try:
        examples = parse_bytes(raw, fmt, f"fuzz.{fmt}")
    except DataError as exc:
        assert str(exc).startswith("fuzz."), exc  # the message names the file
        return
    assert examples
    for e in examples:
        assert e.text.strip() and e.intent.strip() and len(e.text) <= MAX_TEXT_CHARS
        (e.text + e.intent).encode("utf-8")  # storable: the job store writes examples as UTF-8


FORMATS = st.sampled_from(["csv", "jsonl", "yaml"])


@QUICK
@given(st.lists(st.fixed_dictionaries({"text": ANY_TEXT, "intent": ANY_TEXT}), min_size=1, max_size=10))
def test_readers_jsonl_of_any_unicode(rows: list[dict[str, str]]) -> None:
    import json

    raw = "".join(json.dumps(r) + "\n" for r in rows).encode()  # ASCII: escapes carry surrogates
    _parse_or_data_error(raw, "jsonl")


@QUICK
@given(st.binary(max_size=2000), FORMATS)
def test_readers_any_bytes(raw: bytes, fmt: str) -> None:
    _parse_or_data_error(raw, fmt)


@QUICK
@given(SYNTAX, FORMATS)
def test_readers_syntax_soup(text: str, fmt: str) -> None:
    _parse_or_data_error(text.encode("utf-8", "surrogatepass"), fmt)


@QUICK
@given(st.lists(st.tuples(ANY_TEXT, ANY_TEXT), min_size=1, max_size=10))
def test_readers_csv_rows_of_any_unicode(rows: list[tuple[str, str]]) -> None:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "intent"])
    writer.writerows(rows)
    _parse_or_data_error(out.getvalue().encode("utf-8", "surrogatepass"), "csv")
