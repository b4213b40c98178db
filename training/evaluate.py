"""Evaluate a model on labelled data: headline metrics, per-intent scores, confusions, a picture."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from model.predictor import Predictor
from store.model_store import CONFUSION_FILE, REPORT_FILE
from training.metrics import (
    CONFIDENT,
    calibration,
    confused_pairs,
    confusion_matrix,
    entity_scores,
    operating_curve,
    per_label,
    summary,
)
from training.readers import OOS, Example

if TYPE_CHECKING:  # training.train imports torch; reading a report does not need it
    from training.train import TrainResult

log = logging.getLogger("intently.evaluate")


def evaluate(predictor: Predictor, examples: Sequence[Example]) -> dict[str, Any]:
    """The full report; `report["metrics"]` holds the headline numbers (training.metrics.summary)."""
    if not examples:
        raise ValueError("no examples to evaluate on")
    known = set(predictor.labels) | {OOS}
    unknown = sorted({e.intent for e in examples} - known)
    texts = [e.text for e in examples]
    y_true = [e.intent for e in examples]
    predictions = predictor.predict_batch(texts, top_k=1)
    y_pred = [p.intent or OOS for p in predictions]
    labels = sorted(set(y_true) | set(y_pred), key=lambda x: (x == OOS, x))
    metrics = summary(y_true, y_pred, set(predictor.labels))
    if any(e.entities for e in examples):
        metrics |= entity_scores(
            [[(s.start, s.end, s.entity) for s in e.entities] for e in examples],
            [[(s.start, s.end, s.entity) for s in p.entities] for p in predictions],
        )
    # The ranking's top intent and its probability (the answer's `confidence`), out of scope or not.
    calibrated = calibration(
        [p.ranking[0].confidence for p in predictions],
        [p.ranking[0].intent == t for p, t in zip(predictions, y_true, strict=True)],
        [not p.out_of_scope for p in predictions],
    )
    reliability = calibrated.pop("reliability")
    metrics |= calibrated
    return {
        "model_version": predictor.version,
        "metrics": metrics,
        "per_intent": per_label(y_true, y_pred),
        "confused_pairs": confused_pairs(y_true, y_pred, texts),
        "labels": labels,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels),
        "unknown_intents": unknown,  # in the data, never predictable by this model
        "reliability": reliability,  # per bin of confidence: rows, mean confidence, accuracy
        # Known intents turned away against unknown ones caught, for each out-of-scope boundary.
        "operating_curve": operating_curve(
            [p.out_of_scope_score for p in predictions], [t == OOS or t in unknown for t in y_true]
        ),
    }


def format_report(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = [f"model {report['model_version']}  ({m['n']} examples)"]
    keys = (
        "accuracy",
        "macro_f1",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "oos_f1",
        "open_macro_f1",
        "entity_precision",
        "entity_recall",
        "entity_f1",
        "ece",
        "confident_answers",
    )
    for key in keys:
        if key in m:
            lines.append(f"  {key:<18} {m[key]:.4f}")
    if m.get("confident_accuracy") is not None:
        lines.append(
            f"  {'confident_accuracy':<18} {m['confident_accuracy']:.4f}"
            f"  (right among the answers given with confidence >= {CONFIDENT})"
        )
    if report["unknown_intents"]:
        lines.append(f"  intents this model does not know: {', '.join(report['unknown_intents'])}")
    lines.append("")
    scores = report["per_intent"]
    if OOS not in _true_labels(report):
        # No `oos` rows in the data: a row for it would only repeat the rejections, with no support.
        scores = {k: v for k, v in scores.items() if k != OOS}
    lines += _score_table("intent", scores)
    if m.get("entities"):
        lines += ["", *_score_table("entity", m["entities"])]
    if report["confused_pairs"]:
        lines.append("")
        lines.append("  most confused (true -> predicted):")
        for pair in report["confused_pairs"]:
            example = pair["examples"][0] if pair.get("examples") else ""
            lines.append(f"    {pair['count']:>4}  {pair['true']} -> {pair['predicted']}   e.g. {example!r}")
    return "\n".join(lines)


def _true_labels(report: dict[str, Any]) -> set[str]:
    """The labels the evaluated data has (support above 0)."""
    return {k for k, v in report["per_intent"].items() if v["support"]}


def _score_table(heading: str, scores: dict[str, dict[str, float]]) -> list[str]:
    """Precision, recall, F1 and support a row, worst F1 first."""
    lines = [f"  {heading:<32} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
    for name, s in sorted(scores.items(), key=lambda kv: kv[1]["f1"]):
        lines.append(
            f"  {name[:32]:<32} {s['precision']:>9.3f} {s['recall']:>7.3f} {s['f1']:>6.3f} {s['support']:>8}"
        )
    return lines


def write_report(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """`report.json`, `confusion.png` (a confusion matrix a person can read) and `reliability.png`
    (a reliability diagram: accuracy against confidence)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    png_path = out / "confusion.png"
    plot_confusion(report["labels"], report["confusion_matrix"], png_path)
    reliability_path = out / "reliability.png"
    plot_reliability(report["reliability"], report["metrics"], reliability_path)
    return [json_path, png_path, reliability_path]


def version_report_files(result: TrainResult) -> dict[str, bytes]:
    """`report.json` and `confusion.png` of a new version, on the examples held out from its training.

    Written into the version directory when the version is stored, so the
    service only serves files and never evaluates. A report is a convenience:
    if it cannot be made, the version is stored without one (and the API says so).
    """
    held_out = result.valid_examples
    if not held_out:
        return {}
    predictor = Predictor(result.net, result.meta, result.tokenizer)
    try:
        report = evaluate(predictor, held_out)
        report["evaluated_on"] = {"data": "held-out examples (valid.jsonl)", "examples": len(held_out)}
        picture = io.BytesIO()
        plot_confusion(report["labels"], report["confusion_matrix"], picture)
    except Exception:
        log.exception("evaluation report of version %s failed; stored without one", predictor.version)
        return {}
    return {
        REPORT_FILE: json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8"),
        CONFUSION_FILE: picture.getvalue(),
    }


def plot_confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], path: Path | BinaryIO) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    # Row-normalised: each row shows where one true intent's utterances went.
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = min(max(6.0, 0.28 * n + 3), 40.0)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=max(4, 10 - n // 20))
    ax.set_yticks(range(n), labels, fontsize=max(4, 10 - n // 20))
    ax.set_xlabel("predicted intent")
    ax.set_ylabel("true intent")
    ax.set_title("Confusion matrix (share of each true intent)")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_reliability(bins: Sequence[dict[str, Any]], metrics: dict[str, Any], path: Path | BinaryIO) -> None:
    """Accuracy against confidence per bin (a calibrated model follows the diagonal), and how many rows
    each bin holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    width = bins[0]["high"] - bins[0]["low"] if bins else 1 / 15
    lows = [b["low"] for b in bins]
    top.bar(
        lows, [b["accuracy"] for b in bins], width=width, align="edge", edgecolor="black", label="accuracy"
    )
    top.plot(
        [b["low"] + width / 2 for b in bins],
        [b["confidence"] for b in bins],
        "o",
        color="tab:red",
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy of the top intent")
    sure = metrics.get("confident_accuracy")
    sure_text = "-" if sure is None else f"{sure:.1%}"
    top.set_title(
        f"Reliability: ECE {metrics.get('ece', 0.0):.3f}; right at confidence >= {CONFIDENT}: {sure_text}"
    )
    top.legend(loc="upper left")
    bottom.bar(lows, [b["rows"] for b in bins], width=width, align="edge", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (the top intent's calibrated probability)")
    bottom.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
