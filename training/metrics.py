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


def open_set(y_true: Sequence[str], y_pred: Sequence[str], known: set[str]) -> dict[str, float]:
    """The open-intent figures: the known intents plus `oos` as one more class (K+1).

    A true intent outside `known` (one the model never saw) counts as `oos`, as in
    the open intent detection literature (Zhang et al. 2021).
    """
    t = [y if y in known else OOS for y in y_true]
    p = [y if y in known else OOS for y in y_pred]
    labels = per_label(t, p)
    classes = set(t) | {OOS}
    known_f1 = [labels[c]["f1"] for c in classes if c != OOS]
    return {
        "open_accuracy": sum(a == b for a, b in zip(t, p, strict=True)) / len(t) if t else 0.0,
        "open_macro_f1": sum(labels.get(c, {"f1": 0.0})["f1"] for c in classes) / len(classes),
        "oos_f1": labels[OOS]["f1"] if OOS in labels else 0.0,
        "known_macro_f1": sum(known_f1) / len(known_f1) if known_f1 else 0.0,
    }


def summary(y_true: Sequence[str], y_pred: Sequence[str], known: set[str] | None = None) -> dict[str, Any]:
    """What `intently evaluate --json` prints (docs/api.md); OOS figures only with `oos` rows in the data.

    `known`: the model's intents; true intents outside it count as `oos` in the
    open-intent figures (`open_set`), which are given when any row is `oos` or unknown.
    """
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
    known = set(y_true) - {OOS} if known is None else set(known) - {OOS}
    if n and any(t not in known for t in y_true):
        result.update(open_set(y_true, y_pred, known))
    return result


Span = tuple[int, int, str]  # start, end, entity type


def entity_scores(gold: Sequence[Sequence[Span]], found: Sequence[Sequence[Span]]) -> dict[str, Any]:
    """Micro precision, recall and F1 over exact span-and-type matches, and the same per type.

    `gold` and `found` hold each utterance's spans, in the same order of utterances.
    """
    if len(gold) != len(found):
        raise ValueError("gold and found differ in length")
    hits: Counter[str] = Counter()
    true: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    for g, f in zip(gold, found, strict=True):
        g_set, f_set = set(g), set(f)
        true.update(s[2] for s in g_set)
        predicted.update(s[2] for s in f_set)
        hits.update(s[2] for s in g_set & f_set)
    precision, recall, f1 = _prf(sum(hits.values()), sum(predicted.values()), sum(true.values()))
    per_type = {}
    for kind in sorted(set(true) | set(predicted)):
        p, r, f1_kind = _prf(hits[kind], predicted[kind], true[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f1_kind, "support": true[kind]}
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1, "entities": per_type}


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


CONFIDENT = 0.9  # "certain": the confidence at which an answer is usually acted on without asking
ECE_BINS = 15


def calibration(
    confidences: Sequence[float], correct: Sequence[bool], answered: Sequence[bool], bins: int = ECE_BINS
) -> dict[str, Any]:
    """Whether confidences mean what they say, on labelled rows.

    `confidences`: each row's top intent probability (an answer's `confidence`); `correct`:
    whether that intent is the row's true one (never, for an `oos` row); `answered`: whether
    an intent was given (not out of scope).

    - `ece`: expected calibration error, `bins` equal-width bins of confidence, each bin's
      |accuracy - mean confidence| weighted by its share of the rows.
    - `confident_answers`: the share of rows answered with confidence >= 0.9;
      `confident_accuracy`: the share of those answers that are right (None when there are none).
    - `reliability`: per non-empty bin, its bounds, rows, mean confidence and accuracy.
    """
    if not len(confidences) == len(correct) == len(answered):
        raise ValueError("confidences, correct and answered differ in length")
    n = len(confidences)
    rows: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for c, ok in zip(confidences, correct, strict=True):
        rows[min(int(c * bins), bins - 1)].append((c, ok))
    ece, reliability = 0.0, []
    for i, members in enumerate(rows):
        if not members:
            continue
        mean_conf = sum(c for c, _ in members) / len(members)
        acc = sum(ok for _, ok in members) / len(members)
        ece += len(members) / n * abs(acc - mean_conf)
        reliability.append(
            {
                "low": i / bins,
                "high": (i + 1) / bins,
                "rows": len(members),
                "confidence": mean_conf,
                "accuracy": acc,
            }
        )
    sure = [ok for c, ok, a in zip(confidences, correct, answered, strict=True) if a and c >= CONFIDENT]
    return {
        "ece": ece,
        "confident_answers": len(sure) / n if n else 0.0,
        "confident_accuracy": sum(sure) / len(sure) if sure else None,
        "reliability": reliability,
    }


def operating_curve(scores: Sequence[float], unknown: Sequence[bool], steps: int = 100) -> dict[str, Any]:
    """What the out-of-scope setting costs and buys, on labelled rows: for each boundary b on the
    verdict's score (`out_of_scope_score`, which is at least 0.5 exactly where the model says out of
    scope, so b = 0.5 is the model as it is), the share of known-intent rows turned away (score >= b)
    against the share of unknown (`oos`) rows caught. Moving b moves every rule's threshold together:
    the curve a team reads to choose `reject_known`. `unknown_caught` is None without `oos` rows."""
    known_scores = [s for s, u in zip(scores, unknown, strict=True) if not u]
    unknown_scores = [s for s, u in zip(scores, unknown, strict=True) if u]

    def point(b: float) -> dict[str, Any]:
        return {
            "boundary": round(b, 4),
            "known_turned_away": sum(s >= b for s in known_scores) / len(known_scores)
            if known_scores
            else None,
            "unknown_caught": sum(s >= b for s in unknown_scores) / len(unknown_scores)
            if unknown_scores
            else None,
        }

    return {
        "known": len(known_scores),
        "unknown": len(unknown_scores),
        "points": [point(i / steps) for i in range(steps + 1)],
        "current": point(0.5),
    }
