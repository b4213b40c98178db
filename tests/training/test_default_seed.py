"""An empty store seeded from a prebuilt store (the Docker image's way) instead of training."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.predictor import Predictor
from store.directory import DirectoryStore
from training.default_model import DATA_ENV, SEED_ENV, ensure_default
from training.train import TrainResult


@pytest.fixture
def seed_store(small_result: TrainResult, tmp_path: Path) -> DirectoryStore:
    seed = DirectoryStore(tmp_path / "seed")
    version = seed.add(small_result.net, small_result.meta, [], small_result.valid_examples)
    seed.activate(version)
    return seed


def test_empty_store_gets_the_seed_version(
    seed_store: DirectoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_ENV, str(seed_store.root))
    # No training data at all: a fallback to training would fail loudly.
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "missing.csv"))
    store = DirectoryStore(tmp_path / "store")

    version = ensure_default(store)

    assert version == seed_store.active()
    assert store.active() == version
    assert store.read_data(version, held_out=True) == seed_store.read_data(version, held_out=True)
    texts = ["What time is it?", "wake me up at 6:30", "how do I bake bread?"]
    ours = Predictor.load(store.path(version)).predict_batch(texts)
    theirs = Predictor.load(seed_store.path(version)).predict_batch(texts)
    assert [p.to_dict() for p in ours] == [p.to_dict() for p in theirs]
    assert ensure_default(store) is None  # filled: nothing more to do


def test_seed_without_active_version_falls_back_to_training_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_ENV, str(tmp_path / "empty-seed"))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "missing.csv"))
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        ensure_default(DirectoryStore(tmp_path / "store"))
