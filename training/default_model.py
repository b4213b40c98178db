"""The built-in default model: trained from `data/assistant/train.csv` on first use, then kept.

Training is deterministic (fixed seed), so every machine builds the same model.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from model.store import ModelStore
from training.evaluate import version_report_files
from training.readers import read_file
from training.train import TrainConfig, train

DATA_ENV = "INTENTLY_DEFAULT_DATA"
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

    Several workers may start at once on one store: a lock lets one train
    while the others wait and then find the store filled.
    """
    if store.active() is not None:
        return None
    store.ensure()
    with open(store.root / ".init.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if store.active() is not None:
                return None
            examples = read_file(default_data_path())
            result = train(examples, TrainConfig(), show_progress=show_progress)
            result.meta.training["source"] = "built-in default data"
            version = store.add(
                result.net, result.meta, examples, result.valid_examples, version_report_files(result)
            )
            store.activate(version)
            return version
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
