"""Do confidences mean what they say? The temperature's fit and the detector's default, before and after.

Why: with a handful of validation rows, all right, the plain fit of the temperature chose its
floor and every answer came out at 1.0, wrong ones too (issue 29). This trains one model per
data set and size (seeded draws of N examples per intent, or the full set), then calibrates
that same network several ways and scores each on the data set's test rows:

- `before`: the defaults before issue 29, the plain likelihood fit and the detector turning
  away 10% of known requests (`reject_known` 0.1);
- `prior A`: the likelihood fit bounded by Laplace's rule (`temperature_prior` A; 1 was the
  default from issue 29's first round until the log-normal prior), `reject_known` 0;
- `spread S`: the likelihood fit with a log-normal prior on T of spread S;
- `top S`: the answers' log-loss with a log-normal prior on T of spread S;
- the current defaults are the row marked `*`.

Figures: intent accuracy (a rejection counts as wrong), the share of known-intent test rows
turned away, expected calibration error (15 bins) beside its floor on these rows, the share of
answers given with confidence >= 0.9, and the share of those that are right (mean and worst draw).
Every variant calibrates the same network, so they cost the same training seconds; `--cache DIR`
keeps the networks (and their logits) so that a rerun only calibrates.

    .venv/bin/python -m bench.calibration [--datasets assistant snips banking77] [--per-intent 5 10]
                                          [--draws 1] [--full] [--priors 0 1 2 4] [--spreads S...]
                                          [--tops S...] [--threads 1] [--cache DIR] [--results NAME]
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import (
    add_set_flag,
    apply_threads,
    base_parser,
    load_datasets,
    run_facts,
    subsample_per_intent,
    table,
    training_options,
    write_results,
)
from model.artifact import ModelMeta, save
from model.predictor import Predictor
from model.tokenizer import Tokenizer
from training.config import TrainConfig
from training.evaluate import evaluate
from training.metrics import calibration
from training.network import IntentNet, load_net, run_network
from training.readers import OOS, Example, checksum, clean
from training.train import _calibrate, _keep_rows, stratified_split, train

BEFORE = {
    "temperature_prior": 0.0,
    "temperature_spread": 0.0,
    "temperature_fit": "likelihood",
    "reject_known": 0.1,
}
# Options only calibration reads: networks trained with other values are the same networks.
CALIBRATION_ONLY = ("temperature_prior", "temperature_spread", "temperature_fit", "reject_known")


def variants(
    base: TrainConfig, priors: list[float], spreads: list[float], tops: list[float]
) -> dict[str, TrainConfig]:
    """`before`, then the bound alone (`prior A`), then the log-normal prior alone on the likelihood
    (`spread S`) and on the answers' log-loss (`top S`)."""
    out = {"before": base.model_copy(update=BEFORE)}
    for a in priors:
        update = {
            "temperature_prior": a,
            "temperature_spread": 0.0,
            "temperature_fit": "likelihood",
            "reject_known": 0.0,
        }
        out[f"prior {a:g}"] = base.model_copy(update=update)
    for fit, values in (("likelihood", spreads), ("top", tops)):
        for s in values:
            update = {
                "temperature_prior": 0.0,
                "temperature_spread": s,
                "temperature_fit": fit,
                "reject_known": 0.0,
            }
            out[f"{'spread' if fit == 'likelihood' else 'top'} {s:g}"] = base.model_copy(update=update)
    return out


def default_variant(base: TrainConfig) -> str:
    """The name of the variant the defaults give (marked `*`)."""
    if base.temperature_fit == "top" and not base.temperature_prior:
        return f"top {base.temperature_spread:g}"
    if base.temperature_spread and not base.temperature_prior:
        return f"spread {base.temperature_spread:g}"
    if not base.temperature_spread and base.temperature_fit == "likelihood":
        return f"prior {base.temperature_prior:g}"
    return ""


def ece_floor(confidences: list[float], draws: int = 200, seed: int = 0) -> float:
    """The mean ECE a perfectly calibrated model with these confidences would show on this many rows:
    each row right with the probability its confidence states. A figure under it is noise, not
    calibration (the built-in set's 280 test rows give about 0.06)."""
    rng = np.random.default_rng(seed)
    conf = np.asarray(confidences)
    total = 0.0
    for _ in range(draws):
        right = rng.random(len(conf)) < conf
        total += calibration(conf.tolist(), right.tolist(), [True] * len(conf))["ece"]
    return total / draws


def score(predictor: Predictor, test_ex: list[Example]) -> dict[str, Any]:
    report = evaluate(predictor, test_ex)
    m = report["metrics"]
    predictions = predictor.predict_batch([e.text for e in test_ex], top_k=1)
    known = [p for p, e in zip(predictions, test_ex, strict=True) if e.intent != OOS]
    return {
        "accuracy": m["accuracy"],
        "known_rejected": sum(p.intent is None for p in known) / max(1, len(known)),
        "ece": m["ece"],
        "ece_floor": ece_floor([p.confidence for p in predictions]),
        "confident_answers": m["confident_answers"],
        "confident_accuracy": m["confident_accuracy"],
    }


def trained(
    train_ex: list[Example], valid_ex: list[Example], base: TrainConfig, cache: Path | None
) -> tuple[IntentNet, ModelMeta, Tokenizer, float]:
    """The network trained on `train_ex`, and its seconds; kept in `cache` (keyed by data and options)
    so that further calibration methods can be compared on the very same networks."""
    options = {k: v for k, v in base.model_dump().items() if k not in CALIBRATION_ONLY}
    key = hashlib.sha256(
        json.dumps([checksum(train_ex), checksum(valid_ex), options], sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    path = None if cache is None else cache / key
    if path is not None and (path / "model.json").is_file():
        net, meta, tokenizer = load_net(path)
        return net, meta, tokenizer, float(meta.training["seconds"])
    started = time.perf_counter()
    result = train(train_ex, base, valid_examples=valid_ex)
    seconds = time.perf_counter() - started
    if path is not None:
        save(result.net, result.meta, path)
    return result.net, result.meta, result.tokenizer, seconds


def keep_scores(
    net: IntentNet,
    meta: ModelMeta,
    tokenizer: Tokenizer,
    train_ex: list[Example],
    valid_ex: list[Example],
    test_ex: list[Example],
    cache: Path,
    seed: int,
    tag: str,
) -> None:
    """The validation and test rows' logits, for comparing calibration methods without the networks."""
    labels = meta.labels
    index = {lab: i for i, lab in enumerate(labels)}
    in_scope = torch.tensor([lab != OOS for lab in labels])
    _keep_rows(net, tokenizer, train_ex, index, seed)
    out = {}
    for name, rows in (("valid", valid_ex), ("test", test_ex)):
        scored = run_network(net, [tokenizer.encode(e.text) for e in rows], in_scope)
        out[f"{name}_logits"] = scored.logits.numpy()
        out[f"{name}_target"] = np.array([index.get(e.intent, -1) for e in rows])
    np.savez(cache / f"scores-{tag}.npz", labels=np.array(labels), **out)


def run_one(
    subset: list[Example],
    test_ex: list[Example],
    base: TrainConfig,
    priors: list[float],
    spreads: list[float],
    tops: list[float],
    cache: Path | None = None,
    tag: str = "",
) -> dict[str, Any]:
    """One network, trained as `intently train` trains it, calibrated each way."""
    data, _ = clean(subset)
    # The split train() makes itself; given explicitly, so that every variant sees the same rows.
    train_ex, valid_ex = stratified_split(data, base.valid_fraction, base.seed)
    net, result_meta, tokenizer, seconds = trained(train_ex, valid_ex, base, cache)
    if cache is not None:
        keep_scores(net, result_meta, tokenizer, train_ex, valid_ex, test_ex, cache, base.seed, tag)
    out: dict[str, Any] = {
        "train_examples": len(train_ex),
        "valid_examples": len(valid_ex),
        "seconds": round(seconds, 1),
        "teacher": (result_meta.training.get("teacher") or {}).get("source"),
        "variants": {},
    }
    for name, cfg in variants(base, priors, spreads, tops).items():
        predictor = recalibrated(net, result_meta, tokenizer, train_ex, valid_ex, cfg)
        figures = score(predictor, test_ex)
        out["variants"][name] = {"temperature": predictor.meta.temperature, **figures}
    return out


def recalibrated(
    net: IntentNet,
    meta: ModelMeta,
    tokenizer: Tokenizer,
    train_ex: list[Example],
    valid_ex: list[Example],
    cfg: TrainConfig,
) -> Predictor:
    """The same network calibrated as `cfg` says: temperature, thresholds and detector anew."""
    cal = _calibrate(net, tokenizer, train_ex, valid_ex, meta.labels, cfg)
    meta = replace(
        meta,
        temperature=round(cal.temperature, 5),
        threshold=round(cal.threshold, 4),
        coverage_threshold=round(cal.coverage_threshold, 4),
        detector=cal.detector,
        metrics=cal.metrics,
    )
    return Predictor(net, meta, tokenizer)


def pct(values: list[float | None]) -> str:
    real = [v for v in values if v is not None]
    return "-" if not real else f"{100 * statistics.fmean(real):.1f}"


def worst(values: list[float | None]) -> str:
    real = [v for v in values if v is not None]
    return "-" if not real else f"{100 * min(real):.1f}"


def main() -> None:
    parser = base_parser("Calibration on held-out test rows: before and after, on the same networks.")
    parser.add_argument("--per-intent", type=int, nargs="*", default=[5, 10], metavar="N")
    parser.add_argument("--draws", type=int, default=1, help="seeded draws per size (seeds SEED..SEED+D-1)")
    parser.add_argument("--full", action="store_true", help="also train on the whole training set once")
    parser.add_argument("--priors", type=float, nargs="*", default=[0.0, 1.0, 2.0, 4.0], metavar="A")
    parser.add_argument("--spreads", type=float, nargs="*", default=[], metavar="S")
    parser.add_argument("--tops", type=float, nargs="*", default=[], metavar="S")
    parser.add_argument("--results", default="calibration", help="bench/results/NAME.json")
    parser.add_argument(
        "--cache", default=None, help="keep the trained networks here and reuse them on a rerun"
    )
    add_set_flag(parser)
    parser.set_defaults(datasets=["assistant", "snips", "banking77"])
    args = parser.parse_args()
    apply_threads(args.threads)
    base = training_options(parser, args.set)
    top = base.temperature_fit == "top"
    priors = sorted(set(args.priors) | ({base.temperature_prior} if not base.temperature_spread else set()))
    spreads = sorted(set(args.spreads) | ({base.temperature_spread} - {0.0} if not top else set()))
    tops = sorted(set(args.tops) | ({base.temperature_spread} if top else set()))
    default = default_variant(base)
    loaded = load_datasets(args.datasets)
    headers = [
        "data", "per intent", "variant", "T", "acc %", "known out %", "ECE", "floor", ">=0.9 %", "right %",
        "worst right %",
    ]  # fmt: skip
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    for name, (train_all, test_ex) in loaded.items():
        results[name] = {}
        sizes: list[int | None] = [*args.per_intent, *([None] if args.full else [])]
        for size in sizes:
            key = str(size or "full")
            draws = []
            for seed in range(args.seed, args.seed + (args.draws if size else 1)):
                subset = subsample_per_intent(train_all, size, seed) if size else list(train_all)
                draw = run_one(
                    subset,
                    test_ex,
                    base.model_copy(update={"seed": seed}),
                    priors,
                    spreads,
                    tops,
                    Path(args.cache) if args.cache else None,
                    f"{name}-{key}-{seed}",
                )
                print(f"[{name}] {key} per intent, seed {seed}: {draw}", flush=True)
                draws.append(draw)
            results[name][key] = draws
            for variant in draws[0]["variants"]:
                runs = [d["variants"][variant] for d in draws]
                mark = " *" if variant == default else ""
                rows.append(
                    [
                        name,
                        key,
                        variant + mark,
                        f"{statistics.fmean(r['temperature'] for r in runs):.3g}",
                        pct([r["accuracy"] for r in runs]),
                        pct([r["known_rejected"] for r in runs]),
                        f"{statistics.fmean(r['ece'] for r in runs):.3f}",
                        f"{statistics.fmean(r['ece_floor'] for r in runs):.3f}",
                        pct([r["confident_answers"] for r in runs]),
                        pct([r["confident_accuracy"] for r in runs]),
                        worst([r["confident_accuracy"] for r in runs]),
                    ]
                )
            print(table(headers, rows), flush=True)
            write_results(args.results, {"run": run_facts(args), "datasets": results})
    print()
    print(table(headers, rows))
    print(
        "mean over the draws; T: the fitted temperature; known out: known-intent test rows turned away;"
        " floor: the ECE a perfectly calibrated model with the same confidences would show on these rows;"
        " >=0.9: rows answered with confidence 0.9 or more; right: the share of those that are right"
        " (worst: of the draws)"
    )
    print(f"results: {write_results(args.results, {'run': run_facts(args), 'datasets': results})}")


if __name__ == "__main__":
    main()
