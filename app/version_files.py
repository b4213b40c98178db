"""Reading what a version directory keeps beside its model: training data and evaluation report.

The service only reads these files; training writes them when it stores a
version (training/evaluate.py `version_report_files`). A version directory
never changes once written, so what is read is cached by path.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.errors import ApiError
from app.model_holder import ModelHolder
from store.model_store import CONFUSION_FILE, DATA_FILE, REPORT_FILE, StoreError, StoreUnavailable, read_jsonl

MAX_EXAMPLES = 20  # per intent, kept in memory for the playground


def version_dir(holder: ModelHolder, version: str) -> Path:
    """The directory of `version`: in the store, or the fixed model directory if that is the one.

    Blocking (run it in a thread): on PostgreSQL it may fetch the version into the cache first.
    """
    if holder.store is not None:
        try:
            # Asked first: another replica may have deleted a version this one still has cached.
            path = holder.store.path(version) if holder.store.exists(version) else None
        except StoreUnavailable:
            raise  # a 503 (app/errors.py), not the caller's fault
        except StoreError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        if path is None or not (path / "model.json").is_file():
            raise ApiError(404, "not_found", f"no version {version!r} in the model store")
        return path
    served = holder.predictor.version if holder.predictor else None
    if holder.model_dir is None or version != served:
        raise ApiError(404, "not_found", f"no version {version[:128]!r}: this server serves only {served}")
    return holder.model_dir


@lru_cache(maxsize=8)
def _examples_by_intent(path: Path) -> dict[str, tuple[int, tuple[str, ...]]]:
    counts: dict[str, int] = {}
    firsts: dict[str, list[str]] = {}
    for row in read_jsonl(path.read_bytes()):
        intent = row["intent"]
        counts[intent] = counts.get(intent, 0) + 1
        kept = firsts.setdefault(intent, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(row["text"])
    return {intent: (counts[intent], tuple(firsts[intent])) for intent in counts}


def intent_examples(folder: Path, intent: str, limit: int) -> tuple[int, list[str]]:
    """How many training examples `intent` had, and the first `limit` of them."""
    path = folder / DATA_FILE
    if not path.is_file():
        raise ApiError(404, "not_found", "this model version keeps no training data")
    total, texts = _examples_by_intent(path).get(intent, (0, ()))
    return total, list(texts[:limit])


@lru_cache(maxsize=8)
def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


def report(folder: Path, version: str) -> dict[str, Any]:
    """The stored evaluation report of a version; a 404 that says why when there is none."""
    path = folder / REPORT_FILE
    if not path.is_file():
        raise ApiError(
            404,
            "no_report",
            f"version {version} has no evaluation report: only versions trained by this release "
            "(training jobs, `intently train --store`, the built-in model) store one",
        )
    return _report(path)


def confusion_png(folder: Path, version: str) -> Path:
    path = folder / CONFUSION_FILE
    if not path.is_file():
        raise ApiError(404, "no_report", f"version {version} has no confusion matrix picture")
    return path
