"""The vanishing-gradient experiment: a plain tanh RNN against an LSTM as the signal moves away from the end.

Why: the project reads utterances with an LSTM rather than a plain RNN because
gating lets a signal survive many time steps. Here that is measured directly:
N neutral filler words are appended to every snips utterance (train and test),
and both networks are one-directional with `pooling="last"`, so the classifier
sees only the final hidden state and the intent words must be carried through
N more steps. Expected: the RNN falls as N grows, the LSTM holds. A TF-IDF +
LogisticRegression model, which ignores word order, is trained on the same
data as a position-blind reference.

    .venv/bin/python -m bench.research.vanishing [--fillers 0 10 20 40] [--seed 0] [--quick]
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

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
from model.tokenizer import tokenize
from training.readers import Example
from training.train import TrainConfig

FILLERS = ("um", "so", "well", "like", "you", "know")
PER_INTENT = 300
ARCHS = ("rnn", "lstm")


def small_config(arch: str, seed: int) -> TrainConfig:
    """One direction, last hidden state only: the signal has to travel through every filler.

    No linear bag path either: it reads the words regardless of order and would
    carry the answer past whatever the recurrent layer forgets.
    """
    return TrainConfig(
        arch=arch,
        bidirectional=False,
        pooling="last",
        max_tokens=128,
        embed_dim=64,
        hidden_dim=64,
        ngram_buckets=0,
        bag_buckets=0,
        epochs=8,
        seed=seed,
    )


def add_fillers(examples: list[Example], n: int, rng: random.Random) -> list[Example]:
    """Each utterance followed by `n` filler words drawn in a seeded random order."""
    if n == 0:
        return list(examples)
    return [replace(e, text=f"{e.text} {' '.join(rng.choices(FILLERS, k=n))}") for e in examples]


def run_fillers(
    n: int, train_ex: list[Example], test_ex: list[Example], seed: int, quick: bool
) -> dict[str, Any]:
    train_n = add_fillers(train_ex, n, random.Random(f"fillers-train-{seed}-{n}"))
    test_n = add_fillers(test_ex, n, random.Random(f"fillers-test-{seed}-{n}"))
    texts = [e.text for e in test_n]
    y = [e.intent for e in test_n]
    out: dict[str, Any] = {"fillers": n}
    for arch in ARCHS:
        cfg = small_config(arch, seed)
        if quick:
            cfg = replace(cfg, epochs=QUICK_EPOCHS)
        predictor, result, seconds = train_project(train_n, cfg)
        with_thr, argmax = project_labels(predictor, texts)
        out[arch] = {
            "accuracy": accuracy(y, argmax),
            "accuracy_with_threshold": accuracy(y, with_thr),
            "valid_accuracy_best": max((h["valid_accuracy"] or 0.0) for h in result.history),
            "epochs_run": result.meta.training["epochs_run"],
            "train_seconds": round(seconds, 2),
        }
        print(f"  fillers={n:<3} {arch:<4} acc {pct(out[arch]['accuracy'])}%  ({seconds:.1f} s)")
    model, seconds = fit_baseline(train_n)
    out["tfidf_logreg"] = {
        "accuracy": accuracy(y, list(model.predict(texts))),
        "train_seconds": round(seconds, 2),
    }
    return out


def main() -> None:
    parser = base_parser(
        "Plain RNN vs LSTM as filler words push the signal away from the end.", datasets=False
    )
    parser.add_argument("--dataset", default="snips", help="shared data set to use (default: snips)")
    parser.add_argument("--fillers", nargs="+", type=int, default=[0, 10, 20, 40], metavar="N")
    parser.add_argument(
        "--per-intent", type=int, default=PER_INTENT, help="training examples kept per intent"
    )
    args = parser.parse_args()
    apply_threads(args.threads)
    data = load_dataset(args.dataset)
    exit_if_nothing({args.dataset: data} if data else {})
    assert data is not None
    train_ex, test_ex = data
    per_intent = QUICK_PER_INTENT if args.quick else args.per_intent
    train_ex = subsample_per_intent(train_ex, per_intent, args.seed)
    longest = max(len(tokenize(e.text)) for e in [*train_ex, *test_ex])
    if longest + max(args.fillers) > small_config("rnn", args.seed).max_tokens:
        print(f"note: {longest} + {max(args.fillers)} fillers exceeds max_tokens; the tail is cut")
    print(f"[{args.dataset}] {len(train_ex)} train, {len(test_ex)} test; longest utterance {longest} tokens")

    runs = [run_fillers(n, train_ex, test_ex, args.seed, args.quick) for n in args.fillers]
    rows = [
        [
            r["fillers"],
            pct(r["rnn"]["accuracy"]),
            pct(r["lstm"]["accuracy"]),
            f"{100 * (r['lstm']['accuracy'] - r['rnn']['accuracy']):+.1f}",
            pct(r["tfidf_logreg"]["accuracy"]),
            f"{r['rnn']['train_seconds']:.1f}",
            f"{r['lstm']['train_seconds']:.1f}",
        ]
        for r in runs
    ]
    headers = ["fillers N", "rnn acc %", "lstm acc %", "lstm-rnn pts", "tfidf+logreg %", "rnn s", "lstm s"]
    print()
    print(table(headers, rows))
    print("acc: test accuracy, argmax (no out-of-scope threshold); one direction, pooling=last.")
    path = write_results(
        "vanishing",
        {
            "run": run_facts(args),
            "quick": args.quick,
            "dataset": args.dataset,
            "train_examples": len(train_ex),
            "test_examples": len(test_ex),
            "fillers_vocabulary": list(FILLERS),
            "config": {k: v for k, v in vars(small_config("lstm", args.seed)).items() if k != "arch"},
            "table": {"headers": headers, "rows": rows},
            "runs": runs,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
