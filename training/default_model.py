"""The built-in default model: trained from `data/assistant/train.csv` on first use, then kept.

Training is deterministic (fixed seed), so every machine builds the same model.
An image can train it once at build time into a seed store named by
$INTENTLY_DEFAULT_SEED_STORE; an empty store then gets a copy of that version
instead of a minute of training, so a fresh volume answers at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from model.artifact import load
from model.runtime import Weights
from store.directory import DirectoryStore
from store.model_store import CONFUSION_FILE, REPORT_FILE, ModelStore, StoreError
from training.available import TRAIN_EXTRA, TrainingUnavailable, can_train
from training.evaluate import version_report_files
from training.readers import Example, read_file

DATA_ENV = "INTENTLY_DEFAULT_DATA"
SEED_ENV = "INTENTLY_DEFAULT_SEED_STORE"
_REPO_DATA = Path(__file__).resolve().parents[1] / "data" / "assistant" / "train.csv"


def default_data_path() -> Path:
    """The default training file: $INTENTLY_DEFAULT_DATA, else the one shipped in `data/`."""
    path = Path(os.environ.get(DATA_ENV) or _REPO_DATA)
    if not path.is_file():
        raise FileNotFoundError(
            f"built-in training data not found at {path}; "
            f"set {DATA_ENV} to the path of data/assistant/train.csv"
        )
    return path


def ensure_default(store: ModelStore, show_progress: bool = False) -> str | None:
    """Train the default model into an empty store and activate it; returns the new version.

    Several workers or replicas may start at once on one store: one fills it
    while the others wait (`first_start`) and then find it filled.
    """
    if store.active() is not None:
        return None
    store.ensure()
    with store.first_start():
        if store.active() is not None:
            return None
        seeded = _copy_seed(store)
        if seeded is not None:
            return seeded
        if not can_train():
            raise TrainingUnavailable(
                f"the model store {store.describe()} is empty, and training its built-in model needs"
                f" torch, not installed here: {TRAIN_EXTRA}; or serve a model directory (--model),"
                f" or set {SEED_ENV} to a store that holds one (as the images do)"
            )
        # torch: imported only where the built-in model is trained, not where a seed is copied
        from training.train import TrainConfig, train

        examples = read_file(default_data_path())
        result = train(examples, TrainConfig(), show_progress=show_progress)
        result.meta.training["source"] = "built-in default data"
        version = store.add(
            result.net, result.meta, examples, result.valid_examples, version_report_files(result)
        )
        store.activate(version)
        return version


def _copy_seed(store: ModelStore) -> str | None:
    """Copy the active version of $INTENTLY_DEFAULT_SEED_STORE into `store` and activate it.

    The copy goes through `ModelStore.add`, so it is validated on load and
    appears whole or not at all; without a usable seed the caller trains.
    """
    root = os.environ.get(SEED_ENV)
    if not root:
        return None
    seed = DirectoryStore(root)
    version = seed.active()
    if version is None:
        return None
    weights, meta, _ = load(seed.path(version))
    rows = {held_out: seed.read_data(version, held_out=held_out) for held_out in (False, True)}
    examples = {k: [Example.from_json(r) for r in v] for k, v in rows.items()}
    reports = {
        name: (seed.path(version) / name).read_bytes()
        for name in (REPORT_FILE, CONFUSION_FILE)
        if (seed.path(version) / name).is_file()
    }
    try:
        store.add(Weights(weights), meta, examples[False], examples[True], reports)
    except StoreError:
        if not store.exists(version):  # a leftover copy of the same version is fine
            raise
    store.activate(version)
    return version
