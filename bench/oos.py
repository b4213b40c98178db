"""Out-of-scope detection on intents the model never saw, against a thresholded TF-IDF baseline.

Why: the project picks its out-of-scope threshold on held-out data with no
`oos` rows to learn from, and promises it costs little in-scope accuracy. The
shared sets have no out-of-scope rows, so ~25% of the intents are held out as
"unseen": their training rows are removed and their test rows become `oos`.
The baseline gets the very same threshold rule (temperature, then the highest
threshold expected to cost <= max_oos_drop of in-scope accuracy) on the same
validation split, so the two are compared on detection, not on the rule.

    .venv/bin/python -m bench.oos [--datasets banking77 snips] [--seed 0] [--quick]
                                  [--oos-examples 0.25]

`--oos-examples F`: the case where a team gives `oos` examples. A further
fraction F of the intents is turned into `oos` training rows (their test
rows are dropped), and recall is still measured on the unseen quarter,
which no training row resembles by construction.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from bench.common import (
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    accuracy,
    apply_threads,
    base_parser,
    exit_if_nothing,
    fit_baseline,
    load_dataset,
    pct,
    project_labels,
    run_facts,
    subsample_per_intent,
    table,
    train_project,
    write_results,
)
from model.predictor import decide
from training.calibration import choose_threshold, fit_temperature
from training.metrics import summary
from training.readers import OOS, Example, clean
from training.train import TrainConfig, stratified_split

UNSEEN_FRACTION = 0.25
TARGET_DROP_POINTS = 1.5


def split_unseen(
    train_ex: list[Example], test_ex: list[Example], seed: int, oos_examples: float = 0.0
) -> tuple[list[Example], list[Example], list[str]]:
    """Training rows of the known intents; test rows with the unseen intents relabelled `oos`.

    With `oos_examples` > 0, that fraction of the other intents becomes `oos`
    training rows instead, and their test rows leave the test set.
    """
    intents = sorted({e.intent for e in train_ex} - {OOS})
    k = max(1, round(UNSEEN_FRACTION * len(intents)))
    unseen = sorted(random.Random(f"unseen-{seed}").sample(intents, k))
    hidden = set(unseen)
    rest = [i for i in intents if i not in hidden]
    m = min(len(rest) - 2, round(oos_examples * len(intents))) if oos_examples > 0 else 0
    given = set(random.Random(f"given-{seed}").sample(rest, max(0, m)))
    known_train = [
        replace(e, intent=OOS) if e.intent in given else e
        for e in train_ex
        if e.intent not in hidden and e.intent != OOS
    ]
    test = [replace(e, intent=OOS) if e.intent in hidden else e for e in test_ex if e.intent not in given]
    return known_train, test, unseen


def in_scope_only(y: list[str], pred: list[str]) -> tuple[list[str], list[str]]:
    pairs = [(t, p) for t, p in zip(y, pred, strict=True) if t != OOS]
    return [t for t, _ in pairs], [p for _, p in pairs]


def row(system: str, y: list[str], with_thr: list[str], argmax: list[str], **extra: Any) -> dict[str, Any]:
    """The figures of one system; `drop_points` is what the threshold costs in-scope."""
    s = summary(y, with_thr)
    no_thr = accuracy(*in_scope_only(y, argmax))
    return {
        "system": system,
        "in_scope_accuracy": s["in_scope_accuracy"],
        "in_scope_accuracy_without_threshold": no_thr,
        "drop_points": round(100 * (no_thr - s["in_scope_accuracy"]), 2),
        "oos_recall": s["oos_recall"],
        "oos_precision": s["oos_precision"],
        "accuracy": s["accuracy"],
        "macro_f1": s["macro_f1"],
        **extra,
    }


def baseline(train_ex: list[Example], texts: list[str], y: list[str], cfg: TrainConfig) -> dict[str, Any]:
    """TF-IDF + LogReg thresholded exactly as training/train.py thresholds the project."""
    data, _ = clean(train_ex)
    fit_ex, valid_ex = stratified_split(data, cfg.valid_fraction, cfg.seed)
    model, seconds = fit_baseline(fit_ex)
    labels = [str(c) for c in model.classes_]
    index = {lab: i for i, lab in enumerate(labels)}
    oos_index = index.get(OOS)
    in_scope = torch.tensor([lab != OOS for lab in labels])

    def log_probs(batch: list[str]) -> torch.Tensor:
        return torch.from_numpy(np.log(np.clip(model.predict_proba(batch), 1e-12, 1.0))).float()

    valid_logits = log_probs([e.text for e in valid_ex])
    valid_y = torch.tensor([index[e.intent] for e in valid_ex], dtype=torch.long)
    temperature = fit_temperature(valid_logits, valid_y)
    valid_probs = torch.softmax(valid_logits / temperature, dim=-1)
    threshold = choose_threshold(valid_probs, valid_y, in_scope, oos_index, cfg.max_oos_drop)

    probs = torch.softmax(log_probs(texts) / temperature, dim=-1)
    decisions = decide(probs, in_scope, oos_index, threshold)
    with_thr = [OOS if d.out_of_scope else labels[d.top] for d in decisions]
    argmax = [labels[d.top] for d in decisions]
    return row(
        "baseline: tfidf+logreg",
        y,
        with_thr,
        argmax,
        threshold=threshold,
        temperature=round(temperature, 5),
        train_seconds=round(seconds, 2),
    )


def run_dataset(
    name: str, train_ex: list[Example], test_ex: list[Example], seed: int, quick: bool, oos_examples: float
) -> dict[str, Any]:
    known_train, test, unseen = split_unseen(train_ex, test_ex, seed, oos_examples)
    cfg = TrainConfig(seed=seed)
    if quick:
        known_train = subsample_per_intent(known_train, QUICK_PER_INTENT, seed)
        cfg = replace(cfg, epochs=QUICK_EPOCHS)
    texts = [e.text for e in test]
    y = [e.intent for e in test]
    n_oos = sum(t == OOS for t in y)
    known = {e.intent for e in known_train} - {OOS}
    given = sum(e.intent == OOS for e in known_train)
    print(
        f"[{name}] {len(unseen)} intents unseen, {len(known)} known; {len(known_train)} train"
        f" ({given} oos rows given), {len(test)} test ({n_oos} oos)"
    )

    predictor, result, seconds = train_project(known_train, cfg)
    with_thr, argmax = project_labels(predictor, texts)
    project = row(
        "project: bilstm (default)",
        y,
        with_thr,
        argmax,
        threshold=result.meta.threshold,
        temperature=result.meta.temperature,
        train_seconds=round(seconds, 2),
        epochs_run=result.meta.training["epochs_run"],
    )
    return {
        "unseen_intents": unseen,
        "train_examples": len(known_train),
        "test_examples": len(test),
        "test_oos": n_oos,
        "max_oos_drop": cfg.max_oos_drop,
        "oos_examples_fraction": oos_examples,
        "oos_train_rows": given,
        "systems": [project, baseline(known_train, texts, y, cfg)],
    }


def main() -> None:
    parser = base_parser("Out-of-scope detection on held-out intents: project vs thresholded baseline.")
    parser.add_argument(
        "--oos-examples",
        type=float,
        default=0.0,
        metavar="F",
        help="turn this fraction of the other intents into `oos` training rows (default 0: none)",
    )
    args = parser.parse_args()
    if not 0 <= args.oos_examples < 0.75:
        parser.error("--oos-examples must be in [0, 0.75)")
    apply_threads(args.threads)
    loaded = {name: data for name in args.datasets if (data := load_dataset(name)) is not None}
    exit_if_nothing(loaded)

    results: dict[str, Any] = {}
    rows = []
    for name, (train_ex, test_ex) in loaded.items():
        results[name] = run_dataset(name, train_ex, test_ex, args.seed, args.quick, args.oos_examples)
        for s in results[name]["systems"]:
            rows.append(
                [
                    name,
                    s["system"],
                    pct(s["in_scope_accuracy"]),
                    pct(s["in_scope_accuracy_without_threshold"]),
                    f"{s['drop_points']:.2f}",
                    "ok" if s["drop_points"] <= TARGET_DROP_POINTS else "MISS",
                    pct(s["oos_recall"]),
                    pct(s["oos_precision"]),
                    f"{s['threshold']:.2f}",
                    f"{s['temperature']:.3f}",
                    f"{s['train_seconds']:.1f}",
                ]
            )
    headers = [
        "dataset",
        "system",
        "in-scope %",
        "no-thr %",
        "drop pts",
        f"<= {TARGET_DROP_POINTS}",
        "oos rec %",
        "oos prec %",
        "thr",
        "temp",
        "train s",
    ]
    print()
    print(table(headers, rows))
    print("in-scope: accuracy on known intents with the threshold (a rejection counts as wrong);")
    print("no-thr: argmax over known intents; drop = no-thr - in-scope.")
    path = write_results(
        "oos",
        {
            "run": run_facts(args),
            "quick": args.quick,
            "unseen_fraction": UNSEEN_FRACTION,
            "target_drop_points": TARGET_DROP_POINTS,
            "datasets": results,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
