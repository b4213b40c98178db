"""Accuracy with few examples per intent: the project, TF-IDF + logistic regression, and the teacher.

Why: teams start with a handful of examples an intent. This trains every system on
the same seeded draws of N examples per intent (three draws each by default, and the
full training set once) and prints the mean and the spread over the draws. The
teacher (the sentence encoder + logistic regression the project distils from) runs
where its package is installed, so the student can be read against it.

    .venv/bin/python -m bench.few_shot [--datasets banking77 snips] [--per-intent 5 10 30]
                                       [--draws 3] [--full] [--threads 1] [--set NAME=VALUE ...]
                                       [--variant NAME=VALUE[,NAME=VALUE...] ...]

Each `--variant` trains the project once more on every draw, with those options over the `--set`
ones, and adds its columns beside the defaults': a change of default is measured on the same rows,
in the same run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench.common import (
    accuracy,
    add_set_flag,
    apply_threads,
    base_parser,
    fit_baseline,
    load_datasets,
    mean_spread,
    project_labels,
    run_facts,
    subsample_per_intent,
    table,
    train_project,
    training_options,
    write_results,
)
from training.readers import Example
from training.train import TrainConfig


def score_teacher(cfg: TrainConfig, train_ex: Sequence[Example], test_ex: Sequence[Example]) -> float | None:
    """The distillation teacher alone, or None where its packages are missing."""
    from training import pretrained
    from training.distill import fit_teacher

    if not pretrained.packages_installed():
        return None
    encoder = pretrained.load_encoder(
        cfg.teacher if cfg.teacher not in ("", "auto") else pretrained.DEFAULT_ENCODER
    )
    labels = sorted({e.intent for e in train_ex})
    index = {lab: i for i, lab in enumerate(labels)}
    teacher = fit_teacher(
        encoder, [e.text for e in train_ex], [index[e.intent] for e in train_ex], len(labels), cfg.teacher_c
    )
    predicted = teacher.probabilities([e.text for e in test_ex]).argmax(1)
    return accuracy([e.intent for e in test_ex], [labels[i] for i in predicted])


def run_draw(
    train_ex: Sequence[Example],
    test_ex: Sequence[Example],
    cfg: TrainConfig,
    teacher: bool,
    variants: dict[str, TrainConfig],
) -> dict[str, Any]:
    texts = [e.text for e in test_ex]
    y = [e.intent for e in test_ex]
    predictor, result, seconds = train_project(train_ex, cfg)
    with_threshold, argmax = project_labels(predictor, texts)
    baseline, baseline_seconds = fit_baseline(train_ex)
    out: dict[str, Any] = {
        "train_examples": len(train_ex),
        "project": accuracy(y, with_threshold),
        "project_without_threshold": accuracy(y, argmax),
        "project_seconds": round(seconds, 1),
        "vectors": result.meta.training.get("vectors", {}).get("source"),
        "teacher_used": (result.meta.training.get("teacher") or {}).get("source"),
        "tfidf": accuracy(y, list(baseline.predict(texts))),
        "tfidf_seconds": round(baseline_seconds, 1),
    }
    for name, options in variants.items():
        other, _, other_seconds = train_project(train_ex, options.model_copy(update={"seed": cfg.seed}))
        out[f"variant {name}"] = accuracy(y, project_labels(other, texts)[0])
        out[f"variant {name} seconds"] = round(other_seconds, 1)
    if teacher:
        started = time.perf_counter()
        out["teacher"] = score_teacher(cfg, train_ex, test_ex)
        out["teacher_seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = base_parser("Few examples per intent: the project vs TF-IDF + logreg vs the teacher.")
    parser.add_argument("--per-intent", type=int, nargs="*", default=[5, 10, 30], metavar="N")
    parser.add_argument("--draws", type=int, default=3, help="seeded draws per size (seeds SEED..SEED+D-1)")
    parser.add_argument("--full", action="store_true", help="also train on the whole training set once")
    parser.add_argument("--no-teacher", action="store_true", help="skip the teacher's own score")
    add_set_flag(parser)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VALUE[,NAME=VALUE]",
        help="train again with these options, on the same draws, beside the defaults",
    )
    args = parser.parse_args()
    if any(n < 2 for n in args.per_intent):
        parser.error("--per-intent values must be at least 2")
    apply_threads(args.threads)
    base = training_options(parser, args.set)
    variants = {v: training_options(parser, [*args.set, *v.split(",")]) for v in args.variant}
    loaded = load_datasets(args.datasets)

    results: dict[str, Any] = {}
    rows = []
    for name, (train_ex, test_ex) in loaded.items():
        sizes: list[int | None] = [*args.per_intent, *([None] if args.full else [])]
        results[name] = {}
        for size in sizes:
            draws = []
            for seed in range(args.seed, args.seed + (args.draws if size else 1)):
                subset = subsample_per_intent(train_ex, size, seed) if size else list(train_ex)
                cfg = base.model_copy(update={"seed": seed})
                draw = run_draw(subset, test_ex, cfg, not args.no_teacher, variants)
                print(f"[{name}] {size or 'full'} per intent, seed {seed}: {draw}", flush=True)
                draws.append(draw)
            key = str(size or "full")
            results[name][key] = draws
            rows.append(
                [
                    name,
                    key,
                    len(draws),
                    mean_spread([d["project"] for d in draws]),
                    mean_spread([d["tfidf"] for d in draws]),
                    mean_spread([d.get("teacher") for d in draws]),
                    f"{statistics.fmean(d['project_seconds'] for d in draws):.0f}",
                    *(
                        f"{mean_spread([d[f'variant {v}'] for d in draws])}"
                        f" ({statistics.fmean(d[f'variant {v} seconds'] for d in draws):.0f} s)"
                        for v in variants
                    ),
                ]
            )
    print()
    headers = ["dataset", "per intent", "draws", "intently %", "TF-IDF %", "teacher %", "train s"]
    print(table([*headers, *(f"{v} %" for v in variants)], rows))
    print(
        "mean ± half the range over the draws; intently with its out-of-scope threshold (a rejection: wrong)"
    )
    path = write_results(
        "few-shot", {"run": run_facts(args), "options": base.model_dump(), "datasets": results}
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
