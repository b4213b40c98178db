"""Fitting the temperature on the validation rows and masked copies of them (issue 29, tried and left).

Why: with seven validation rows, all right (snips at 10 an intent), no fit can tell how sure the
answers should be; copies of those rows with words masked (`<unk>`, as word dropout does in
training) are more rows, and harder ones, labelled with the original's intent. This calibrates
the networks bench.calibration trains (the same draws and split; `--cache` reuses its networks)
three ways and scores the top in-scope probability of every test row against whether it is right
(no thresholds, so the figures are a little apart from bench.calibration's):

- `default`: the validation rows, Laplace's bound (the default fit);
- `masked+bound`: the rows and `--copies` masked copies of each, the bound on them all;
- `masked`: the same rows, no bound.

    .venv/bin/python -m bench.research.masked_calibration [--mask 0.15] [--copies 10] [--cache DIR]
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.calibration import trained
from bench.common import apply_threads, base_parser, load_datasets, subsample_per_intent, table
from model.tokenizer import UNK, Tokenizer, tokenize
from training.calibration import fit_temperature
from training.config import TrainConfig
from training.metrics import CONFIDENT, calibration
from training.network import run_network
from training.readers import OOS, Example, clean
from training.train import stratified_split

HEADERS = ["data", "per intent", "seed", "fit", "T", "ECE", ">=0.9 %", "right %"]
SIZES = {"snips": (5, 10, 30), "assistant": (5, 10, 30), "banking77": (5, 10)}


def masked_copies(
    tokenizer: Tokenizer, rows: list[Example], p: float, copies: int, seed: int
) -> tuple[list[Any], list[str]]:
    rng = random.Random(seed)
    encoded, intents = [], []
    for e in rows:
        tokens = tokenize(e.text, tokenizer.config)
        for _ in range(copies):
            new = [UNK if rng.random() < p else t for t in tokens]
            if new != tokens and not all(t == UNK for t in new):
                encoded.append(tokenizer.encode_tokens(new))
                intents.append(e.intent)
    return encoded, intents


def figures(logits: torch.Tensor, targets: np.ndarray, in_scope: torch.Tensor, t: float) -> list[float]:
    probs = torch.softmax(logits / t, -1).masked_fill(~in_scope, 0.0)
    conf, top = probs.max(-1)
    keep = targets >= 0
    right = (top.numpy() == targets)[keep]
    c = conf.numpy()[keep]
    sure = c >= CONFIDENT
    ece = calibration(c.tolist(), right.tolist(), [True] * len(c))["ece"]
    return [t, ece, float(sure.mean()), float(right[sure].mean()) if sure.any() else float("nan")]


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--mask", type=float, default=0.15)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--cache", default=None, help="bench.calibration's network cache")
    parser.set_defaults(datasets=list(SIZES))
    args = parser.parse_args()
    apply_threads(args.threads)
    cache = None if args.cache is None else Path(args.cache)
    rows: list[list[Any]] = []
    for name, (train_all, test_ex) in load_datasets(args.datasets).items():
        for n in SIZES.get(name, (5, 10)):
            for seed in range(args.draws):
                cfg = TrainConfig(seed=seed)
                data, _ = clean(subsample_per_intent(train_all, n, seed))
                train_ex, valid_ex = stratified_split(data, cfg.valid_fraction, cfg.seed)
                net, meta, tokenizer, _ = trained(train_ex, valid_ex, cfg, cache)
                index = {label: i for i, label in enumerate(meta.labels)}
                in_scope = torch.tensor([label != OOS for label in meta.labels])
                copies, intents = masked_copies(tokenizer, valid_ex, args.mask, args.copies, seed)
                valid = run_network(net, [tokenizer.encode(e.text) for e in valid_ex], in_scope).logits
                more = run_network(net, copies, in_scope).logits
                test = run_network(net, [tokenizer.encode(e.text) for e in test_ex], in_scope).logits
                y_valid = torch.tensor([index[e.intent] for e in valid_ex])
                y_both = torch.cat([y_valid, torch.tensor([index[i] for i in intents])])
                y_test = np.array([index.get(e.intent, -1) for e in test_ex])
                both = torch.cat([valid, more])
                for variant, (logits, targets, prior) in {
                    "default": (valid, y_valid, 1.0),
                    "masked+bound": (both, y_both, 1.0),
                    "masked": (both, y_both, 0.0),
                }.items():
                    t = fit_temperature(logits, targets, prior=prior, in_scope=in_scope)
                    f = figures(test, y_test, in_scope, t)
                    rows.append(
                        [
                            name,
                            n,
                            seed,
                            variant,
                            f"{f[0]:.2f}",
                            f"{f[1]:.3f}",
                            f"{100 * f[2]:.1f}",
                            f"{100 * f[3]:.1f}",
                        ]
                    )
                print(
                    table(["data", "per intent", "seed", "fit", "T", "ECE", ">=0.9 %", "right %"], rows[-3:])
                )
    print(f"\nmask {args.mask}, {args.copies} copies a validation row")
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
