"""In-process inference speed: the Predictor (fp32 and int8) against TF-IDF + logistic regression.

    .venv/bin/python -m bench.inference [--dataset banking77] [--threads 1 2]

Trains each model once on the data set's train split, then measures, in the
same run, the median time of one utterance (batch 1, warm) and the
throughput at batch 256, for every thread count given. Accuracy of the top intent
on the test split is printed too, so a faster variant that loses accuracy shows it,
beside the share of test utterances the model refuses as out of scope.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bench.common import fit_baseline, write_results
from model.predictor import Predictor, quantize_dynamic
from training.readers import read_file
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(classify: Callable[[Sequence[str]], object], texts: Sequence[str]) -> tuple[float, float]:
    """(median microseconds at batch 1, utterances per second at batch 256)."""
    for t in texts[:100]:
        classify([t])
    singles = iter(texts * 10)
    b1 = median_seconds(lambda: classify([next(singles)]), 2000)
    batch = list(texts[:256])
    b256 = median_seconds(lambda: classify(batch), 30)
    return b1 * 1e6, len(batch) / b256


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    folder = ROOT.parent / "shared" / "data" / args.dataset
    if not (folder / "train.csv").is_file():
        print(f"data set not found at {folder}; this benchmark needs ../shared/data")
        return
    train_ex, test_ex = read_file(folder / "train.csv"), read_file(folder / "test.csv")
    texts = [e.text for e in test_ex]
    truth = [e.intent for e in test_ex]

    started = time.perf_counter()
    result = train(train_ex, TrainConfig())
    train_seconds = time.perf_counter() - started
    fp32 = Predictor(result.net, result.meta, result.tokenizer)
    int8 = Predictor(quantize_dynamic(result.net), result.meta, result.tokenizer)
    baseline, baseline_seconds = fit_baseline(train_ex)

    def accuracy(predicted: Sequence[str | None]) -> float:
        return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)

    systems: dict[str, Callable[[Sequence[str]], object]] = {
        "intently fp32": lambda b: fp32.predict_batch(b),
        "intently int8": lambda b: int8.predict_batch(b),
        "tf-idf + logreg": lambda b: baseline.predict_proba(list(b)),
    }
    # Closed-set accuracy of the top intent, as the baseline has no refusals; and the share the
    # model refuses (its out-of-scope verdicts, the unknown-intent detector's included).
    answers = {"intently fp32": fp32.predict_batch(texts), "intently int8": int8.predict_batch(texts)}
    acc = {name: accuracy([p.ranking[0].intent for p in got]) for name, got in answers.items()}
    acc["tf-idf + logreg"] = accuracy(list(baseline.predict(texts)))
    refused = {name: sum(p.out_of_scope for p in got) / len(got) for name, got in answers.items()}
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, fn in systems.items():
            b1, b256 = measure(fn, texts)
            rows.append(
                {
                    "system": name,
                    "threads": threads,
                    "batch1_us": round(b1, 1),
                    "batch256_utt_s": round(b256),
                    "accuracy": round(acc[name], 4),
                    "refused": round(refused.get(name, 0.0), 4),
                }
            )
    print(f"\n{args.dataset}: {len(train_ex)} train, {len(test_ex)} test utterances")
    print(
        f"training (torch's default threads): intently {train_seconds:.1f} s, "
        f"tf-idf + logreg {baseline_seconds:.1f} s"
    )
    print(
        f"{'system':<18}{'threads':>8}{'batch-1 median µs':>20}{'batch-256 utt/s':>18}"
        f"{'top-intent accuracy':>21}{'refused':>9}"
    )
    for r in rows:
        print(
            f"{r['system']:<18}{r['threads']:>8}{r['batch1_us']:>20.0f}{r['batch256_utt_s']:>18}"
            f"{r['accuracy']:>21.4f}{r['refused']:>9.4f}"
        )
    write_results(
        "inference",
        {
            "dataset": args.dataset,
            "train_seconds": round(train_seconds, 1),
            "baseline_train_seconds": round(baseline_seconds, 2),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
