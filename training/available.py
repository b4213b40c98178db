"""Whether this environment can train: torch and the rest of the `train` extra, found without importing.

`pip install intently` serves and classifies; training needs `pip install 'intently[train]'`.
Torch-free, so the service and the command line can ask before they import anything heavy.
"""

from __future__ import annotations

import importlib.util

TRAIN_EXTRA = "pip install 'intently[train]'"
# The packages of the `train` extra that training imports (pyproject.toml).
TRAINING_MODULES = ("torch", "tqdm")


class TrainingUnavailable(Exception):
    """Training was asked for where its packages are not installed; the message names the extra."""


def missing_for_training() -> list[str]:
    """The modules of the `train` extra that cannot be imported here (none: training can run)."""
    missing = []
    for name in TRAINING_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # blocked (sys.modules[name] is None) or broken
            found = False
        if not found:
            missing.append(name)
    return missing


def can_train() -> bool:
    return not missing_for_training()


def require_training(what: str) -> None:
    """Raise TrainingUnavailable, naming the extra, unless `what` (e.g. "training") can run here."""
    missing = missing_for_training()
    if missing:
        raise TrainingUnavailable(
            f"{what} needs {' and '.join(missing)}, not installed here: {TRAIN_EXTRA}"
            " (serving and `intently predict` work without it)"
        )
