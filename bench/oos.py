"""Out-of-scope detection on intents the model never saw, against a thresholded TF-IDF baseline.

Why: the project picks its out-of-scope threshold on held-out data with no
`oos` rows to learn from, and promises it costs little in-scope accuracy. The
shared sets have no out-of-scope rows, so ~25% of the intents are held out as
"unseen": their training rows are removed and their test rows become `oos`.
The baseline gets the very same threshold rule (temperature, then the highest
threshold expected to cost <= max_oos_drop of in-scope accuracy) on the same
validation split, so the two are compared on detection, not on the rule.
The project's second threshold (on its probability times the share of
known words, model/coverage.py) is part of the project, not of the rule,
and the baseline does not get it.

    .venv/bin/python -m bench.oos [--datasets banking77 snips] [--seed 0] [--quick]
                                  [--oos-examples 0.25] [--max-oos-drop 0.0025] [--splits 3]

Besides the figures at the chosen threshold, each system's score (its top
in-scope probability) is judged without a threshold: AUROC of in-scope
test rows against unseen-intent rows, and the recall the best threshold
for this very test set would reach at a 1.5-point drop. The first shows
how well the score separates at all; the second is the ceiling no
threshold rule can pass, so a low recall there is the score's limit, not
the rule's.

`--splits N`: which intents are held out moves recall more than most
model changes (banking77, three splits: 8.6-23.2%), so N splits (seeds
SEED..SEED+N-1, each also the training seed) are run and their mean is
printed under the per-split rows.

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
from sklearn.metrics import roc_auc_score

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
from training.calibration import choose_threshold, fit_temperature, verdicts
from training.metrics import summary
from training.readers import OOS, Example, clean
from training.train import TrainConfig, stratified_split

DEFAULT_MAX_OOS_DROP: float = TrainConfig.model_fields["max_oos_drop"].default

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


def separation(scores: np.ndarray, y: list[str], argmax: list[str]) -> dict[str, float | None]:
    """AUROC of in-scope vs unseen rows, and the recall of the best threshold at the target drop.

    The best threshold is chosen on the test rows themselves: the highest one
    that rejects at most TARGET_DROP_POINTS of the in-scope rows answered right.
    """
    truth = np.array(y)
    unseen = truth == OOS
    if unseen.all() or not unseen.any():
        return {"auroc": None, "best_recall_at_target_drop": None}
    right = np.sort(scores[~unseen & (np.array(argmax) == truth)])
    allowed = int(TARGET_DROP_POINTS / 100 * int((~unseen).sum()))
    threshold = right[allowed] if allowed < len(right) else np.inf
    return {
        "auroc": round(float(roc_auc_score(~unseen, scores)), 4),
        "best_recall_at_target_drop": float(np.mean(scores[unseen] < threshold)),
    }


def row(
    system: str, y: list[str], with_thr: list[str], argmax: list[str], scores: np.ndarray, **extra: Any
) -> dict[str, Any]:
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
        **separation(scores, y, argmax),
        **extra,
    }


def baseline(
    train_ex: list[Example], texts: list[str], y: list[str], foreign: list[str], cfg: TrainConfig
) -> dict[str, Any]:
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
    top, top_prob, rejected = verdicts(probs, in_scope, oos_index, threshold)
    foreign_probs = torch.softmax(log_probs(foreign) / temperature, dim=-1) if foreign else probs[:0]
    foreign_out = verdicts(foreign_probs, in_scope, oos_index, threshold)[2].tolist()
    with_thr = [OOS if out else labels[t] for t, out in zip(top.tolist(), rejected.tolist(), strict=True)]
    argmax = [labels[t] for t in top.tolist()]
    return row(
        "baseline: tfidf+logreg",
        y,
        with_thr,
        argmax,
        top_prob.numpy(),
        out_of_domain_recall=float(np.mean(foreign_out)) if foreign else None,
        threshold=threshold,
        temperature=round(temperature, 5),
        train_seconds=round(seconds, 2),
    )


def run_dataset(
    name: str,
    train_ex: list[Example],
    test_ex: list[Example],
    seed: int,
    quick: bool,
    oos_examples: float,
    max_oos_drop: float,
    foreign: list[str],
) -> dict[str, Any]:
    known_train, test, unseen = split_unseen(train_ex, test_ex, seed, oos_examples)
    cfg = TrainConfig(seed=seed, max_oos_drop=max_oos_drop)
    if quick:
        known_train = subsample_per_intent(known_train, QUICK_PER_INTENT, seed)
        cfg = cfg.model_copy(update={"epochs": QUICK_EPOCHS})
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
    top_in_scope = np.where(predictor.in_scope, predictor.probabilities(texts), -1.0).max(axis=-1)
    foreign_out = [p.out_of_scope for p in predictor.predict_batch(foreign, top_k=1)]
    project = row(
        "project: bilstm (default)",
        y,
        with_thr,
        argmax,
        top_in_scope,
        out_of_domain_recall=float(np.mean(foreign_out)) if foreign else None,
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
        "out_of_domain_test": len(foreign),
        "systems": [project, baseline(known_train, texts, y, foreign, cfg)],
    }


AVERAGED = (
    "in_scope_accuracy",
    "in_scope_accuracy_without_threshold",
    "drop_points",
    "oos_recall",
    "oos_precision",
    "auroc",
    "best_recall_at_target_drop",
    "out_of_domain_recall",
    "threshold",
    "temperature",
    "train_seconds",
)


def mean_systems(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each system's figures averaged over the splits (a figure missing from any split stays None)."""
    means = []
    for i, first in enumerate(runs[0]["systems"]):
        mean: dict[str, Any] = {"system": first["system"]}
        for key in AVERAGED:
            values = [run["systems"][i][key] for run in runs]
            ok = all(v is not None for v in values)
            mean[key] = round(float(np.mean(values)), 5) if ok else None
        means.append(mean)
    return means


def table_row(label: str, s: dict[str, Any]) -> list[str]:
    return [
        label,
        s["system"],
        pct(s["in_scope_accuracy"]),
        pct(s["in_scope_accuracy_without_threshold"]),
        f"{s['drop_points']:.2f}",
        "ok" if s["drop_points"] <= TARGET_DROP_POINTS else "MISS",
        pct(s["oos_recall"]),
        pct(s["oos_precision"]),
        "-" if s["auroc"] is None else f"{s['auroc']:.3f}",
        pct(s["best_recall_at_target_drop"]),
        pct(s["out_of_domain_recall"]),
        f"{s['threshold']:.2f}",
        f"{s['temperature']:.3f}",
        f"{s['train_seconds']:.1f}",
    ]


def main() -> None:
    parser = base_parser("Out-of-scope detection on held-out intents: project vs thresholded baseline.")
    parser.add_argument(
        "--oos-examples",
        type=float,
        default=0.0,
        metavar="F",
        help="turn this fraction of the other intents into `oos` training rows (default 0: none)",
    )
    parser.add_argument(
        "--splits",
        type=int,
        default=1,
        metavar="N",
        help="run N held-out splits (seeds SEED..SEED+N-1) and print their mean too (default 1)",
    )
    parser.add_argument(
        "--max-oos-drop",
        type=float,
        default=DEFAULT_MAX_OOS_DROP,
        metavar="B",
        help=f"threshold budget for both systems (default: training's, {DEFAULT_MAX_OOS_DROP})",
    )
    args = parser.parse_args()
    if not 0 <= args.oos_examples < 0.75:
        parser.error("--oos-examples must be in [0, 0.75)")
    if not 0 <= args.max_oos_drop <= 1:
        parser.error("--max-oos-drop must be in [0, 1]")
    if not 1 <= args.splits <= 20:
        parser.error("--splits must be in 1..20")
    apply_threads(args.threads)
    loaded = {name: data for name in args.datasets if (data := load_dataset(name)) is not None}
    exit_if_nothing(loaded)

    results: dict[str, Any] = {}
    rows = []
    seeds = range(args.seed, args.seed + args.splits)
    for name, (train_ex, test_ex) in loaded.items():
        # Other data sets' test utterances: input from another domain altogether.
        foreign = [e.text for other, (_, test) in loaded.items() if other != name for e in test]
        runs = [
            run_dataset(name, train_ex, test_ex, s, args.quick, args.oos_examples, args.max_oos_drop, foreign)
            for s in seeds
        ]
        results[name] = runs[0] if len(runs) == 1 else {"splits": runs, "mean": mean_systems(runs)}
        for seed, run in zip(seeds, runs, strict=True):
            label = name if len(runs) == 1 else f"{name} split {seed}"
            rows += [table_row(label, s) for s in run["systems"]]
        if len(runs) > 1:
            rows += [table_row(f"{name} mean of {len(runs)}", s) for s in mean_systems(runs)]
    headers = [
        "dataset",
        "system",
        "in-scope %",
        "no-thr %",
        "drop pts",
        f"<= {TARGET_DROP_POINTS}",
        "oos rec %",
        "oos prec %",
        "auroc",
        f"best rec % @{TARGET_DROP_POINTS}",
        "other-set rec %",
        "thr",
        "temp",
        "train s",
    ]
    print()
    print(table(headers, rows))
    print("in-scope: accuracy on known intents with the threshold (a rejection counts as wrong);")
    print("no-thr: argmax over known intents; drop = no-thr - in-scope.")
    print("auroc, best rec: the top in-scope probability judged without the chosen threshold (best rec: the")
    print(f"best threshold for this test set at a {TARGET_DROP_POINTS}-point drop, a ceiling for any rule).")
    print("other-set rec: share of the other data sets' test utterances (another domain) rejected.")
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
