"""`intently train | evaluate | predict`: the training package's commands.

`app.cli` adds `serve` and is the `intently` console script; these commands
never import the service.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, fields
from typing import Any

from model.artifact import ArtifactError, save
from model.predictor import Predictor
from model.store import ModelStore, StoreError
from training.evaluate import evaluate, format_report, version_report_files, write_report
from training.pretrained import DEFAULT_ENCODER, EncoderUnavailable, load_encoder
from training.readers import DataError, read_data, read_file
from training.train import TrainConfig, train
from training.vectors import build_table

# Options the command line spells out; the rest of TrainConfig goes through --set.
_HELP = {
    "arch": "recurrent cell: lstm (default), gru or rnn",
    "epochs": "maximum number of epochs (early stopping may end sooner)",
    "seed": "random seed; the same data and seed give the same model",
    "vectors": "pretrained word vectors: a sentence-transformers model (Hugging Face name or directory)"
    " or a table from `intently vectors build` (default: the built-in encoder when installed)",
    "teacher": "distil from a sentence-transformers model (Hugging Face name or directory, or 'auto'):"
    " it labels augmented utterances for the network; only the network is saved",
    "reject_known": "share of known-intent requests the unknown-intent detector turns away to catch"
    " requests of intents you have not described (default 0.1; with `oos` rows in the data, or 0,"
    " it costs at most max_oos_drop of accuracy, as the other thresholds; docs/training.md)",
}


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from labelled utterances")
    p.add_argument(
        "data",
        nargs="+",
        help="training files or directories (a Rasa project's data/): .csv, .jsonl, .yml/.yaml, .json (Rasa)",
    )
    p.add_argument("--out", help="model directory to write")
    p.add_argument("--store", help="add the model as a new version of this model store")
    p.add_argument("--activate", action="store_true", help="with --store: make it the active version")
    p.add_argument("--valid", help="validation file (default: a stratified 10%% of the data)")
    p.add_argument("--arch", choices=["lstm", "gru", "rnn"], default="lstm", help=_HELP["arch"])
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help=_HELP["epochs"])
    p.add_argument("--seed", type=int, default=0, help=_HELP["seed"])
    vectors = p.add_mutually_exclusive_group()
    vectors.add_argument("--vectors", metavar="NAME_OR_PATH", help=_HELP["vectors"])
    vectors.add_argument("--no-vectors", action="store_true", help="train without pretrained vectors")
    p.add_argument("--teacher", metavar="NAME_OR_PATH", help=_HELP["teacher"])
    p.add_argument("--reject-known", type=float, metavar="SHARE", help=_HELP["reject_known"])
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other training option, e.g. --set hidden_dim=128 (see docs/training.md)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="measure a model on labelled data")
    p.add_argument("model", help="model directory")
    p.add_argument("data", help="labelled file: .csv, .jsonl, .yml/.yaml, .json (Rasa)")
    p.add_argument("--json", action="store_true", help="print the headline metrics as one JSON object")
    p.add_argument("--report", metavar="DIR", help="write report.json and confusion.png to DIR")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("models", help="list, activate or roll back the versions of a model store")
    p.add_argument("action", choices=["list", "activate", "rollback", "delete"])
    p.add_argument("version", nargs="?", help="the version, for activate and delete")
    p.add_argument("--store", required=True, help="model store directory")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("vectors", help="build a table of pretrained word vectors to train with")
    p.add_argument("action", choices=["build"])
    p.add_argument("--source", default=DEFAULT_ENCODER, help="sentence-transformers model: name or directory")
    p.add_argument("--out", required=True, help="table file to write (.safetensors)")
    p.add_argument("--words", help="file of words, one a line (default: the encoder's own whole words)")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("predict", help="classify utterances, one JSON line each")
    p.add_argument("model", help="model directory")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_predict)


def parse_options(pairs: list[str], base: dict[str, Any]) -> TrainConfig:
    types = {f.name: f.type for f in fields(TrainConfig)}
    options = dict(base)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in types:
            raise CliError(f"--set {pair!r}: expected NAME=VALUE with NAME one of {sorted(types)}")
        options[name] = _coerce(name, value.strip(), str(types[name]))
    try:
        return TrainConfig.from_options(options)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _coerce(name: str, value: str, type_name: str) -> Any:
    try:
        if type_name == "bool":
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(value)
            return value.lower() in {"true", "1", "yes"}
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
    except ValueError:
        raise CliError(f"--set {name}: {value!r} is not a valid {type_name}") from None
    return value


# Measured (docs/BENCHMARKS.md section 2): the thresholds alone caught 18-26% of requests
# for intents nobody described; `oos` examples from other intents raised that to 68-94%.
NO_OOS_HINT = (
    "no rows labelled 'oos': out-of-scope input is judged by the thresholds alone; examples of"
    " what the bot should not answer, labelled 'oos', catch far more (docs/training.md)"
)


def cmd_train(args: argparse.Namespace) -> int:
    if not args.out and not args.store:
        raise CliError("say where the model goes: --out DIR or --store DIR")
    base: dict[str, Any] = {"arch": args.arch, "epochs": args.epochs, "seed": args.seed}
    if args.vectors or args.no_vectors:
        base["vectors"] = "" if args.no_vectors else args.vectors
    if args.teacher:
        base["teacher"] = args.teacher
    if args.reject_known is not None:
        base["reject_known"] = args.reject_known
    config = parse_options(args.set, base)
    data = read_data(args.data)
    examples = data.examples
    valid = read_file(args.valid) if args.valid else None
    result = train(examples, config, valid_examples=valid, show_progress=not args.quiet, nlu=data)
    for line in result.summary.lines() + data.lines():
        print(line, file=sys.stderr)
    m = result.meta.metrics
    if m:
        print(
            f"validation accuracy {m['accuracy']:.4f} "
            f"(without threshold {m['accuracy_without_threshold']:.4f}), "
            f"macro F1 {m['macro_f1']:.4f}; temperature {result.meta.temperature}, "
            f"out-of-scope threshold {result.meta.threshold}"
            f" (known-word share: {result.meta.coverage_threshold})",
            file=sys.stderr,
        )
        if result.meta.detector is not None:
            print(
                f"unknown-intent detector: {m.get('detector_rejected', 0):.1%} of the validation"
                " rows of known intents turned away",
                file=sys.stderr,
            )
        if not m["oos_in_training"]:
            print(NO_OOS_HINT, file=sys.stderr)
        if result.meta.training.get("refit_on_all_examples"):
            print(
                f"few examples per intent: retrained on all {result.meta.data['examples']} rows,"
                " with the temperature and thresholds above",
                file=sys.stderr,
            )
    else:
        print("no validation data: confidences are uncalibrated and no threshold was set", file=sys.stderr)
    if args.out:
        path = save(result.net, result.meta, args.out)
        print(f"model {result.meta.version} written to {path}")
    if args.store:
        store = ModelStore(args.store)
        version = store.add(
            result.net, result.meta, examples, result.valid_examples, version_report_files(result)
        )
        if args.activate:
            store.activate(version)
        print(f"model {version} added to store {args.store}" + (" and activated" if args.activate else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    predictor = Predictor.load(args.model)
    report = evaluate(predictor, read_file(args.data))
    if args.report:
        for path in write_report(report, args.report):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report["metrics"]))
    else:
        print(format_report(report))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    store = ModelStore(args.store)
    if args.action in ("activate", "delete") and not args.version:
        raise CliError(f"models {args.action} needs a VERSION")
    if args.action == "list":
        versions = store.list()
        if args.json:
            print(json.dumps({"active": store.active(), "versions": [asdict(v) for v in versions]}))
        for v in [] if args.json else versions:
            acc = v.metrics.get("accuracy")
            score = f"valid acc {acc:.4f}" if isinstance(acc, float) else "no validation"
            mark = "*" if v.active else " "
            facts = f"{v.arch}  {v.intents} intents  {v.examples} examples  {score}"
            print(f"{mark} {v.version}  {v.created_at}  {facts}")
        if not versions and not args.json:
            print(f"store {args.store} holds no versions", file=sys.stderr)
    elif args.action == "activate":
        store.activate(args.version)
        print(f"activated {args.version}")
    elif args.action == "rollback":
        print(f"rolled back to {store.rollback()}")
    else:
        store.delete(args.version)
        print(f"deleted {args.version}")
    return 0


def cmd_vectors(args: argparse.Namespace) -> int:
    words = None
    if args.words:
        with open(args.words, encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
    table = build_table(load_encoder(args.source), words)
    path = table.save(args.out)
    print(f"{len(table.words)} words x {table.dim} from {table.source} ({table.checksum}) written to {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    predictor = Predictor.load(args.model)
    if args.top_k < 1:
        raise CliError("--top-k must be at least 1")
    for prediction in predictor.predict_batch(args.texts, top_k=args.top_k):
        print(json.dumps(prediction.to_dict(), ensure_ascii=False))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; bad input becomes one clear line on stderr and exit 2."""
    try:
        return int(args.func(args))
    except (CliError, DataError, ArtifactError, StoreError, EncoderUnavailable, ValueError, OSError) as exc:
        print(f"intently {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
