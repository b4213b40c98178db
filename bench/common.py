"""Helpers shared by the benchmarks: data, the TF-IDF baseline, training, tables, results.

Kept in one place so that every benchmark reads the data, trains the project
and scores predictions the same way, and a figure in one table can be compared
with the same figure in another.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.predictor import Predictor
from tests.support.results import RESULTS as RESULTS  # re-exported: benchmarks import from here
from tests.support.results import write_results as write_results
from training.readers import OOS, Example, read_file
from training.train import TrainConfig, TrainResult, train

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = (REPO / ".." / "shared" / "data").resolve()
# Data sets that ship with the project (data/NAME/), not in ../shared/data.
BUILT_IN = ("assistant",)
QUICK_PER_INTENT = 20
QUICK_EPOCHS = 2


def base_parser(description: str, datasets: bool = True) -> argparse.ArgumentParser:
    """The flags every benchmark shares, so they are spelled the same everywhere."""
    parser = argparse.ArgumentParser(description=description)
    if datasets:
        parser.add_argument("--datasets", nargs="+", default=["banking77", "snips"], metavar="NAME")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: ~{QUICK_PER_INTENT} training examples per intent, {QUICK_EPOCHS} epochs",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice). On a machine shared with other jobs use 1:"
        " two threads on a half-busy 2-core machine were measured 5-20x slower than one",
    )
    return parser


def add_set_flag(parser: argparse.ArgumentParser) -> None:
    """`--set NAME=VALUE`: a training option, as `intently train` takes it."""
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a training option")


def training_options(parser: argparse.ArgumentParser, pairs: list[str]) -> TrainConfig:
    """The `--set` options as a TrainConfig; a bad one ends the run with the parser's message."""
    from training.cli import CliError, parse_options

    try:
        return parse_options(pairs, {})
    except CliError as exc:
        parser.error(str(exc))


def load_datasets(names: Sequence[str]) -> dict[str, tuple[list[Example], list[Example]]]:
    """The named data sets that are here; exits 0 with a message when none is."""
    loaded = {name: data for name in names if (data := load_dataset(name)) is not None}
    exit_if_nothing(loaded)
    return loaded


def apply_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads; oversubscribed cores make recurrent training crawl."""
    if threads is not None:
        torch.set_num_threads(threads)


def load_dataset(name: str) -> tuple[list[Example], list[Example]] | None:
    """Train and test examples, or None (with a message) when the shared data is not here.

    A fresh clone has no ../shared/data; the benchmark then says so instead of failing.
    """
    folder = REPO / "data" / name if name in BUILT_IN else DATA_ROOT / name
    paths = [folder / "train.csv", folder / "test.csv"]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"[{name}] skipped: data not found ({', '.join(missing)}); expected at ../shared/data/{name}/")
        return None
    return read_file(paths[0]), read_file(paths[1])


def exit_if_nothing(loaded: dict[str, Any]) -> None:
    """Exit 0 with a clear message when none of the requested data sets is available."""
    if not loaded:
        print(f"No benchmark data found under {DATA_ROOT}; nothing to do.")
        sys.exit(0)


def subsample_per_intent(examples: Sequence[Example], per_intent: int, seed: int) -> list[Example]:
    """At most `per_intent` examples of each intent, chosen with a seed so runs repeat."""
    rng = random.Random(seed)
    by_intent: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_intent[ex.intent].append(ex)
    out: list[Example] = []
    for intent in sorted(by_intent):
        group = by_intent[intent]
        out.extend(group if len(group) <= per_intent else rng.sample(group, per_intent))
    return out


def tfidf_logreg() -> Any:
    """The baseline RESEARCH.md measured: word 1-2 + char_wb 2-5 TF-IDF, LogisticRegression C=30."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from training.distill import tfidf_features

    return Pipeline([("features", tfidf_features()), ("clf", LogisticRegression(C=30, max_iter=2000))])


def fit_baseline(examples: Sequence[Example]) -> tuple[Any, float]:
    """The fitted baseline and its wall-clock fit time in seconds."""
    model = tfidf_logreg()
    started = time.perf_counter()
    model.fit([e.text for e in examples], [e.intent for e in examples])
    return model, time.perf_counter() - started


def train_project(examples: Sequence[Example], config: TrainConfig) -> tuple[Predictor, TrainResult, float]:
    """A Predictor over a freshly trained model, the training result, and wall-clock seconds."""
    started = time.perf_counter()
    result = train(examples, config)
    seconds = time.perf_counter() - started
    return Predictor(result.net, result.meta, result.tokenizer), result, seconds


def project_labels(predictor: Predictor, texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(verdicts with the out-of-scope threshold, argmax over in-scope intents without it).

    The first is what a user of the service gets; the second isolates the
    classifier from the threshold.
    """
    with_threshold = [p.intent or OOS for p in predictor.predict_batch(texts, top_k=1)]
    probs = np.where(predictor.in_scope, predictor.probabilities(texts), -1.0)
    argmax = [predictor.labels[i] for i in probs.argmax(axis=-1).tolist()]
    return with_threshold, argmax


def accuracy(y_true: Sequence[str], y_pred: Sequence[str]) -> float:
    return float(np.mean([t == p for t, p in zip(y_true, y_pred, strict=True)])) if y_true else 0.0


def mean_spread(values: Sequence[float | None], deviation: bool = False) -> str:
    """Percent mean ± half the range (or, with `deviation`, the standard deviation); "-" if none."""
    real = [v for v in values if v is not None]
    if not real:
        return "-"
    mean = 100 * statistics.fmean(real)
    if len(real) == 1:
        return f"{mean:.1f}"
    spread = statistics.stdev(real) if deviation else (max(real) - min(real)) / 2
    return f"{mean:.1f} ± {100 * spread:.1f}"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells[1:])
    return "\n".join(out)


def run_facts(args: argparse.Namespace) -> dict[str, Any]:
    """What a reader needs to know to trust or reproduce a results file."""
    import sklearn

    return {
        "args": vars(args),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "threads": torch.get_num_threads(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
