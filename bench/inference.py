"""In-process inference speed: the numpy runtime (what serving runs) beside the torch network
(fp32, and int8 as served before the runtime) and TF-IDF + logistic regression.

    .venv/bin/python -m bench.inference [--dataset banking77] [--threads 1 2] [--epochs N]
        [--no-pretrained] [--repeats 2000] [--model DIR]

Trains each model once on the data set's train split, then measures, in the
same run, the median time of one utterance (batch 1, warm) and the
throughput at batch 256, for every thread count given, the systems' calls
interleaved. Every Intently row is the same `Predictor` (tokens, calibration,
out-of-scope rules, detector) over a different scorer, so the rows differ only in the
network's arithmetic. Accuracy of the top intent
on the test split is printed too, so a faster variant that loses accuracy shows it,
beside the share of test utterances the model refuses as out of scope, and how many
verdicts differ from the torch network's at fp32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from bench.common import fit_baseline, write_results
from model.artifact import save
from model.predictor import Predictor
from training.network import TorchScorer, load_net, quantize_dynamic
from training.readers import read_file
from training.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def measure_interleaved(
    systems: dict[str, Callable[[Sequence[str]], object]], texts: Sequence[str], repeats: int
) -> dict[str, tuple[float, float, float]]:
    """Per system: the batch-1 median µs and the batch-256 rate (utt/s) by the clock, and that rate
    by the process's CPU time; their calls interleaved in rounds, so that on a shared machine
    whose load drifts each system meets the same load. The CPU-time rate leaves out the time the
    process waited for a core: on a loaded machine it is the steadier figure (one thread)."""
    for fn in systems.values():
        for t in texts[:100]:
            fn([t])
    singles: dict[str, list[float]] = {name: [] for name in systems}
    batches: dict[str, list[float]] = {name: [] for name in systems}
    cpu: dict[str, list[float]] = {name: [] for name in systems}
    batch = list(texts[:256])
    for r in range(max(1, repeats // 50)):
        for name, fn in systems.items():
            for t in texts[r * 50 % len(texts) :][:50]:
                start = time.perf_counter()
                fn([t])
                singles[name].append(time.perf_counter() - start)
            # A batch of 256 every round: its median needs as many samples as the noise asks.
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(batch)
            batches[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {
        name: (
            statistics.median(singles[name]) * 1e6,
            len(batch) / statistics.median(batches[name]),
            len(batch) / statistics.median(cpu[name]),
        )
        for name in systems
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="banking77")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, help="fewer epochs, a quicker run (speed is the same)")
    parser.add_argument("--no-pretrained", action="store_true", help="no vectors nor teacher: quicker")
    parser.add_argument("--repeats", type=int, default=2000, help="batch-1 calls timed per system")
    parser.add_argument("--model", help="a model trained on the data set (skips training; no training time)")
    args = parser.parse_args()
    folder = ROOT.parent / "shared" / "data" / args.dataset
    if not (folder / "train.csv").is_file():
        print(f"data set not found at {folder}; this benchmark needs ../shared/data")
        return
    train_ex, test_ex = read_file(folder / "train.csv"), read_file(folder / "test.csv")
    texts = [e.text for e in test_ex]
    truth = [e.intent for e in test_ex]

    started = time.perf_counter()
    if args.model:
        net, meta, tokenizer = load_net(args.model)
        train_seconds = 0.0
    else:
        options: dict[str, object] = {"vectors": "", "teacher": ""} if args.no_pretrained else {}
        if args.epochs:
            options |= {"epochs": args.epochs, "min_steps": 0}
        result = train(train_ex, TrainConfig(**options))  # type: ignore[arg-type]
        net, meta, tokenizer = result.net, result.meta, result.tokenizer
        train_seconds = time.perf_counter() - started
        print(f"trained in {train_seconds:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The runtime as serving loads it: from the saved artifact (INTENTLY_QUANTIZE=1 is the default).
        save(net, meta, Path(tmp) / "m")
        runtime = Predictor.load(Path(tmp) / "m", quantize=True)
        runtime_fp32 = Predictor.load(Path(tmp) / "m")
    torch_fp32 = Predictor(TorchScorer(net), meta, tokenizer)
    # torch's serving form before the runtime: int8 recurrent and linear layers, half-precision tables.
    served = quantize_dynamic(copy.deepcopy(net))
    served.half_tables()
    torch_int8 = Predictor(TorchScorer(served), meta, tokenizer)
    baseline, baseline_seconds = fit_baseline(train_ex)

    def accuracy(predicted: Sequence[str | None]) -> float:
        return sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)

    predictors = {
        "runtime (served)": runtime,
        "runtime fp32": runtime_fp32,
        "torch fp32": torch_fp32,
        "torch int8": torch_int8,
    }
    systems: dict[str, Callable[[Sequence[str]], object]] = {
        name: p.predict_batch for name, p in predictors.items()
    }
    systems["tf-idf + logreg"] = lambda b: baseline.predict_proba(list(b))
    # Closed-set accuracy of the top intent, as the baseline has no refusals; and the share the
    # model refuses (its out-of-scope verdicts, the unknown-intent detector's included).
    answers = {name: p.predict_batch(texts) for name, p in predictors.items()}
    acc = {name: accuracy([p.ranking[0].intent for p in got]) for name, got in answers.items()}
    reference = [(p.ranking[0].intent, p.out_of_scope) for p in answers["torch fp32"]]
    differ = {
        name: sum((p.ranking[0].intent, p.out_of_scope) != r for p, r in zip(got, reference, strict=True))
        for name, got in answers.items()
    }
    acc["tf-idf + logreg"] = accuracy(list(baseline.predict(texts)))
    refused = {name: sum(p.out_of_scope for p in got) / len(got) for name, got in answers.items()}
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):  # numpy's BLAS, as torch's threads for torch
            timed = measure_interleaved(systems, texts, args.repeats)
        for name, (b1, b256, b256_cpu) in timed.items():
            print(
                f"  {name}, {threads} thread(s): {b1:.0f} µs, {b256:.0f} utt/s ({b256_cpu:.0f} by CPU time)",
                flush=True,
            )
            rows.append(
                {
                    "system": name,
                    "threads": threads,
                    "batch1_us": round(b1, 1),
                    "batch256_utt_s": round(b256),
                    "batch256_utt_s_cpu": round(b256_cpu),
                    "accuracy": round(acc[name], 4),
                    "refused": round(refused.get(name, 0.0), 4),
                    "verdicts_differing_from_torch_fp32": differ.get(name),
                }
            )
    print(f"\n{args.dataset}: {len(train_ex)} train, {len(test_ex)} test utterances")
    print(
        f"training (torch's default threads): intently {train_seconds:.1f} s, "
        f"tf-idf + logreg {baseline_seconds:.1f} s"
    )
    print(
        f"{'system':<18}{'threads':>8}{'batch-1 median µs':>20}{'batch-256 utt/s':>18}{'(by CPU)':>10}"
        f"{'top-intent accuracy':>21}{'refused':>9}{'differ':>8}"
    )
    for r in rows:
        print(
            f"{r['system']:<18}{r['threads']:>8}{r['batch1_us']:>20.0f}{r['batch256_utt_s']:>18}"
            f"{r['batch256_utt_s_cpu']:>10}"
            f"{r['accuracy']:>21.4f}{r['refused']:>9.4f}{r['verdicts_differing_from_torch_fp32']!s:>8}"
        )
    int8 = {r["threads"]: r for r in rows if r["system"] == "torch int8"}
    for r in rows:
        if r["system"] == "runtime (served)":
            base = int8[r["threads"]]
            print(
                f"runtime (served) / torch int8, {r['threads']} thread(s): batch-1 time "
                f"{r['batch1_us'] / base['batch1_us']:.2f} (issue 30: at most 0.4), batch-256 rate "
                f"{r['batch256_utt_s'] / base['batch256_utt_s']:.2f} by the clock, "
                f"{r['batch256_utt_s_cpu'] / base['batch256_utt_s_cpu']:.2f} by CPU time (at least 1)"
            )
    write_results(
        "inference",
        {
            "dataset": args.dataset,
            "args": vars(args),
            "train_seconds": round(train_seconds, 1),
            "baseline_train_seconds": round(baseline_seconds, 2),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
