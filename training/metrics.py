"""Classification metrics with out-of-scope as a first-class verdict.

A prediction is a label, or `oos` when the model says out of scope. In-scope
accuracy counts an in-scope row predicted out of scope as wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from training.readers import OOS


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def per_label(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, dict[str, float]]:
    true_counts = Counter(y_true)
    pred_counts = Counter(y_pred)
    hits = Counter(t for t, p in zip(y_true, y_pred, strict=True) if t == p)
    out = {}
    for label in sorted(set(true_counts) | set(pred_counts)):
        p, r, f = _prf(hits[label], pred_counts[label], true_counts[label])
        out[label] = {"precision": p, "recall": r, "f1": f, "support": true_counts[label]}
    return out


def summary(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, Any]:
    """The headline numbers DESIGN.md names; OOS figures only when the data has `oos` rows."""
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    n = len(y_true)
    labels = per_label(y_true, y_pred)
    result: dict[str, Any] = {
        "accuracy": sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / n if n else 0.0,
        # Averaged over the labels the data has: a wrong prediction already
        # lowers its true label's recall, and a label absent from the data has no F1.
        "macro_f1": sum(labels[t]["f1"] for t in set(y_true)) / len(set(y_true)) if n else 0.0,
        "n": n,
    }
    if OOS in y_true:
        in_scope = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if t != OOS]
        result["in_scope_accuracy"] = sum(t == p for t, p in in_scope) / len(in_scope) if in_scope else 0.0
        oos = labels[OOS]
        result["oos_recall"] = oos["recall"]
        result["oos_precision"] = oos["precision"]
    return result


def confused_pairs(
    y_true: Sequence[str], y_pred: Sequence[str], texts: Sequence[str] | None = None, top: int = 10
) -> list[dict[str, Any]]:
    """The most frequent (true, predicted) mistakes, with a few example utterances."""
    pairs = Counter((t, p) for t, p in zip(y_true, y_pred, strict=True) if t != p)
    out = []
    for (t, p), count in pairs.most_common(top):
        item: dict[str, Any] = {"true": t, "predicted": p, "count": count}
        if texts is not None:
            item["examples"] = [
                x for x, tt, pp in zip(texts, y_true, y_pred, strict=True) if (tt, pp) == (t, p)
            ][:3]
        out.append(item)
    return out


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix
