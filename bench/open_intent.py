"""Open intent detection, the literature's protocol: train on some intents, find the others.

Why: a deployed assistant meets requests for intents nobody wrote examples of.
Following Zhang et al. (2021, ADB) and the TEXTOIR toolkit, a seeded random 25%,
50% or 75% of a data set's intents are "known": every system trains on their rows
only and is calibrated on a validation split of them; the test set keeps every
row, and rows of the other intents must come out as "unknown" (`oos`). Reported:
accuracy and macro-F1 over the K known intents plus unknown (K+1), F1 of the
unknown class and macro-F1 of the known ones; mean and spread over the seeds.

Systems, in one run on the same rows:
- intently: the default `TrainConfig` (its unknown-intent detector included);
- intently MSP: the same model, unknown when its calibrated top probability is under
  a threshold set so that the detector's share of validation rows is rejected;
- TF-IDF + logreg with a probability threshold set the same way.

    .venv/bin/python -m bench.open_intent [--datasets banking77 snips assistant] [--known 0.25 0.5 0.75]
                                          [--seeds 5] [--threads 1] [--set NAME=VALUE ...]
                                          [--reject-known SHARE ...]

`--reject-known 0.1` adds the same networks with the detector turning away a tenth of the known
validation rows (the open-intent operating point; the default turns away none beyond the
thresholds' budget), so that what the default costs unknown intents is read in the same run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.calibration import recalibrated
from bench.common import (
    QUICK_EPOCHS,
    QUICK_PER_INTENT,
    add_set_flag,
    apply_threads,
    base_parser,
    fit_baseline,
    load_datasets,
    mean_spread,
    run_facts,
    subsample_per_intent,
    table,
    training_options,
    write_results,
)
from model.predictor import Predictor
from training.metrics import open_set
from training.readers import OOS, Example
from training.train import TrainConfig, stratified_split, train

# Snips has 7 intents: a quarter or half of them known is too few to mean much.
KNOWN_RATIOS = {"snips": (0.75,)}
# The built-in set's `oos` training rows are left out (the protocol trains on known intents
# only); its `oos` test rows stay, as unknown like the held-out intents.
FIGURES = ("open_accuracy", "open_macro_f1", "oos_f1", "known_macro_f1")


def choose_known(intents: Sequence[str], ratio: float, seed: int) -> set[str]:
    """The seeded random share of intents treated as known (at least two)."""
    count = max(2, round(ratio * len(intents)))
    return set(random.Random(seed).sample(sorted(intents), count))


def threshold_rejecting(scores: np.ndarray, share: float) -> float:
    """The score under which `share` of the validation rows fall."""
    return float(np.quantile(scores, share)) if len(scores) and share > 0 else -np.inf


def with_threshold(labels: Sequence[str], scores: np.ndarray, threshold: float) -> list[str]:
    return [OOS if s < threshold else lab for lab, s in zip(labels, scores, strict=True)]


def run_split(
    train_rows: Sequence[Example],
    test_rows: Sequence[Example],
    known: set[str],
    cfg: TrainConfig,
    shares: Sequence[float] = (),
) -> dict[str, dict[str, float]]:
    fit_rows, valid_rows = stratified_split([e for e in train_rows if e.intent in known], 0.1, cfg.seed)
    result = train(fit_rows, cfg, valid_examples=valid_rows)
    predictor = Predictor(result.net, result.meta, result.tokenizer)
    texts = [e.text for e in test_rows]
    y_true = [e.intent for e in test_rows]
    valid_texts = [e.text for e in valid_rows]

    verdicts = [p.intent or OOS for p in predictor.predict_batch(texts, top_k=1)]
    # The same network with the detector set to turn away another share of known requests.
    others = {
        f"intently reject_known={share:g}": [
            p.intent or OOS
            for p in recalibrated(
                result.net,
                result.meta,
                result.tokenizer,
                list(fit_rows),
                list(valid_rows),
                cfg.model_copy(update={"reject_known": share}),
            ).predict_batch(texts, top_k=1)
        ]
        for share in shares
    }
    # The share of validation rows the project rejects sets the others' thresholds,
    # so that every system gives up the same share of known-intent requests.
    valid_verdicts = [p.intent for p in predictor.predict_batch(valid_texts, top_k=1)]
    share = sum(v is None for v in valid_verdicts) / max(1, len(valid_verdicts))

    project_probs = predictor.probabilities(texts)
    valid_probs = predictor.probabilities(valid_texts)
    msp_labels = [predictor.labels[i] for i in project_probs.argmax(1)]
    msp_verdicts = with_threshold(
        msp_labels, project_probs.max(1), threshold_rejecting(valid_probs.max(1), share)
    )

    baseline, _ = fit_baseline(fit_rows)
    base_test = baseline.predict_proba(texts)
    base_valid = baseline.predict_proba(valid_texts)
    base_labels = list(baseline.classes_[base_test.argmax(1)])
    base_verdicts = with_threshold(
        base_labels, base_test.max(1), threshold_rejecting(base_valid.max(1), share)
    )
    out = {
        name: open_set(y_true, pred, known)
        for name, pred in (
            ("intently", verdicts),
            *others.items(),
            ("intently MSP", msp_verdicts),
            ("TF-IDF", base_verdicts),
        )
    }
    out["intently"]["valid_rejected"] = share
    return out


def main() -> None:
    parser = base_parser("Open intent detection: known intents only in training, the rest must be found.")
    parser.add_argument("--known", type=float, nargs="*", default=[0.25, 0.5, 0.75], metavar="SHARE")
    parser.add_argument("--seeds", type=int, default=5, help="random choices of known intents")
    parser.add_argument(
        "--reject-known",
        type=float,
        nargs="*",
        default=[],
        metavar="SHARE",
        help="also score the same networks with the detector turning away this share of known rows",
    )
    add_set_flag(parser)
    args = parser.parse_args()
    if any(not 0 < r < 1 for r in args.known):
        parser.error("--known shares must be between 0 and 1")
    apply_threads(args.threads)
    base = training_options(parser, args.set)
    if args.quick:  # a smoke test of the whole run, not figures
        base = base.model_copy(update={"epochs": QUICK_EPOCHS, "min_steps": 0})
    loaded = load_datasets(args.datasets)

    results: dict[str, Any] = {}
    rows = []
    for name, (train_rows, test_rows) in loaded.items():
        train_rows = [e for e in train_rows if e.intent != OOS]
        if args.quick:
            train_rows = subsample_per_intent(train_rows, QUICK_PER_INTENT, args.seed)
        intents = sorted({e.intent for e in train_rows})
        results[name] = {}
        for ratio in KNOWN_RATIOS.get(name, args.known):
            if ratio not in args.known:
                continue
            runs = []
            for seed in range(args.seed, args.seed + args.seeds):
                known = choose_known(intents, ratio, seed)
                cfg = base.model_copy(update={"seed": seed})
                run = run_split(train_rows, test_rows, known, cfg, args.reject_known)
                print(f"[{name}] known {ratio:.0%}, seed {seed}: {run}", flush=True)
                runs.append(run)
            results[name][str(ratio)] = runs
            for system in runs[0]:
                rows.append(
                    [name, f"{ratio:.0%}", system]
                    + [mean_spread([r[system][f] for r in runs], deviation=True) for f in FIGURES]
                )
    print()
    print(table(["dataset", "known", "system", "K+1 acc", "K+1 macro-F1", "unknown F1", "known F1"], rows))
    print(f"mean ± standard deviation over {args.seeds} choices of known intents")
    path = write_results(
        "open-intent", {"run": run_facts(args), "options": base.model_dump(), "datasets": results}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
