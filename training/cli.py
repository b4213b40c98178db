"""`intently train | evaluate | predict`: the training package's commands.

`train`, `encoder` and `vectors` need the `train` extra (torch); without it they say so in one
line and exit 2, while `predict`, `evaluate`, `models` and `store` work on any artifact.

`app.cli` adds `serve` and is the `intently` console script; these commands
never import the service.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from model.artifact import ArtifactError, save
from model.predictor import Predictor
from model.tokenizer import PAD, UNK
from store.model_store import DATABASE_URL_ENV, ModelStore, StoreError, migrate, open_store
from training import threads
from training.available import TRAIN_EXTRA, TrainingUnavailable, require_training
from training.config import TrainConfig
from training.corpus import corpus_checksum, embed_corpus, read_corpus
from training.evaluate import evaluate, format_report, version_report_files, write_report
from training.pretrained import DEFAULT_ENCODER, EncoderUnavailable, load_encoder
from training.readers import DataError, read_data, read_file
from training.vectors import build_table, encoder_table, for_vocabulary


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


_STORE_HELP = f"with ${DATABASE_URL_ENV} set: this machine's cache of the PostgreSQL store"


def _store(directory: str) -> ModelStore:
    """The store a command names: `directory`, or PostgreSQL if the environment names a database."""
    return open_store(directory, os.environ.get(DATABASE_URL_ENV))


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a model from labelled utterances")
    p.add_argument(
        "data",
        nargs="+",
        help="training files or directories (a Rasa project's data/): .csv, .jsonl, .yml/.yaml, .json (Rasa)",
    )
    p.add_argument("--out", help="model directory to write")
    p.add_argument("--store", help=f"add the model as a new version of this model store ({_STORE_HELP})")
    p.add_argument("--activate", action="store_true", help="with --store: make it the active version")
    p.add_argument("--valid", help="validation file (default: a stratified 10%% of the data)")
    add_training_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(p)
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
    p.add_argument("--store", required=True, help=f"model store directory ({_STORE_HELP})")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("store", help="copy every version of a model store into another backend")
    p.add_argument("action", choices=["migrate"])
    p.add_argument("source", help="a store directory or a postgresql:// URL")
    p.add_argument("target", help="a store directory or a postgresql:// URL")
    p.set_defaults(func=cmd_store)

    p = sub.add_parser("vectors", help="build a table of pretrained word vectors to train with")
    p.add_argument("action", choices=["build"])
    p.add_argument("--source", default=DEFAULT_ENCODER, help="sentence-transformers model: name or directory")
    p.add_argument("--out", required=True, help="table file to write (.safetensors)")
    p.add_argument("--words", help="file of words, one a line (default: the encoder's own whole words)")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("encoder", help="pretrain the recurrent encoder every student starts from")
    p.add_argument("action", choices=["build"])
    p.add_argument("corpus", help="a text file of unlabelled messages, one a line (your users' own are best)")
    p.add_argument(
        "--out", required=True, help="encoder file to write (.safetensors); its facts go beside it"
    )
    p.add_argument(
        "--teacher", default=DEFAULT_ENCODER, help="sentence encoder to imitate (name or directory)"
    )
    p.add_argument("--words", type=int, default=20_000, help="vocabulary size")
    p.add_argument("--epochs", type=int, default=3, help="passes over the corpus")
    p.add_argument("--limit", type=int, help="use only the first N distinct messages")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init", metavar="FILE", help="go on training this encoder (e.g. the shipped one) on the corpus"
    )
    add_threads_flag(p)
    p.set_defaults(func=cmd_encoder)

    p = sub.add_parser("predict", help="classify utterances, one JSON line each")
    p.add_argument("model", help="model directory")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--top-k", type=int, default=5)
    p.set_defaults(func=cmd_predict)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every training option (`--hidden-dim 128`), from its field: help, choices, default."""
    group = parser.add_argument_group("training options (docs/training.md)")
    for name, info in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        text = f"{info.description} Default: {info.default!r}."
        if info.annotation is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, dest=name, help=text)
        elif get_origin(info.annotation) is Literal:
            group.add_argument(flag, choices=get_args(info.annotation), dest=name, help=text)
        elif name in _OFF_SWITCHES:
            one_of = group.add_mutually_exclusive_group()
            one_of.add_argument(flag, metavar="NAME_OR_PATH", dest=name, help=text)
            one_of.add_argument(f"--no-{flag[2:]}", action="store_const", const="", dest=name, help="none")
        else:
            metavars: dict[object, str] = {int: "N", float: "X"}
            metavar = metavars.get(info.annotation, "VALUE")
            group.add_argument(flag, metavar=metavar, dest=name, help=text)
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a training option by its name, e.g. --set hidden_dim=128",
    )


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"torch threads (default: ${threads.THREADS_ENV}, else the cores the load leaves free)",
    )


# Options whose empty value turns a part off; they get a `--no-NAME` flag too.
_OFF_SWITCHES = ("vectors", "encoder", "teacher")


def parse_options(pairs: list[str], base: dict[str, Any]) -> TrainConfig:
    """`base` (flag values) and `--set NAME=VALUE` pairs as a TrainConfig: text read as the types say."""
    options = dict(base)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in TrainConfig.model_fields:
            raise CliError(
                f"--set {pair!r}: expected NAME=VALUE with NAME one of {sorted(TrainConfig.model_fields)}"
            )
        options[name] = value.strip()
    try:
        return TrainConfig.from_options(options, strict=False)
    except ValueError as exc:
        raise CliError(str(exc)) from None


# Thresholds alone catch a minority of out-of-scope requests; `oos` examples catch most (docs/BENCHMARKS.md).
NO_OOS_HINT = (
    "no rows labelled 'oos': out-of-scope input is judged by the thresholds alone; examples of"
    " what the bot should not answer, labelled 'oos', catch far more (docs/training.md)"
)


def cmd_train(args: argparse.Namespace) -> int:
    require_training("training")
    if not args.out and not args.store:
        raise CliError("say where the model goes: --out DIR or --store DIR")
    given = {name: getattr(args, name) for name in TrainConfig.model_fields}
    config = parse_options(args.set, {k: v for k, v in given.items() if v is not None})
    data = read_data(args.data)
    examples = data.examples
    valid = read_file(args.valid) if args.valid else None
    threads.configure(args.threads)  # before torch is imported
    from training.train import train  # torch: imported by the commands that train, not by `serve`

    result = train(examples, config, valid_examples=valid, show_progress=not args.quiet, nlu=data)
    for line in result.summary.lines() + data.lines():
        print(line, file=sys.stderr)
    types = result.meta.entity_types
    print(
        f"entity types learned ({len(types)}): {', '.join(types)}"
        if types
        else 'no entity annotations: the model finds no entities (docs/training.md, "Entities")',
        file=sys.stderr,
    )
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
        store = _store(args.store)
        version = store.add(
            result.net, result.meta, examples, result.valid_examples, version_report_files(result)
        )
        if args.activate:
            store.activate(version)
        print(f"model {version} added to store {args.store}" + (" and activated" if args.activate else ""))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.report and importlib.util.find_spec("matplotlib") is None:
        raise CliError(f"--report draws its pictures with matplotlib, not installed here: {TRAIN_EXTRA}")
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
    store = _store(args.store)
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


def cmd_store(args: argparse.Namespace) -> int:
    """`store migrate SOURCE TARGET`: a postgresql:// URL (a password may come from PGPASSWORD or
    ~/.pgpass, as for psql) or a directory, each way; the cache of a PostgreSQL side is temporary."""
    with tempfile.TemporaryDirectory(prefix="intently-migrate-") as cache:
        source = _named_store(args.source, Path(cache) / "source")
        target = _named_store(args.target, Path(cache) / "target")
        try:
            copied = migrate(source, target)
            pointer = target.pointer()
        finally:
            source.close()
            target.close()
    print(
        f"copied {len(copied)} version(s) from {source.describe()} to {target.describe()}; "
        f"active: {pointer.version}, {len(pointer.history)} earlier in its history"
    )
    return 0


def _named_store(where: str, cache: Path) -> ModelStore:
    if where.startswith(("postgresql://", "postgres://")):
        return open_store(cache, where)
    if not Path(where, "versions").is_dir() and Path(where).exists() and any(Path(where).iterdir()):
        raise CliError(f"{where} is neither a model store directory nor a postgresql:// URL")
    return open_store(where)


def cmd_vectors(args: argparse.Namespace) -> int:
    require_training("building word vectors")
    words = None
    if args.words:
        with open(args.words, encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
    table = build_table(load_encoder(args.source), words)
    path = table.save(args.out)
    print(f"{len(table.words)} words x {table.dim} from {table.source} ({table.checksum}) written to {path}")
    return 0


def cmd_encoder(args: argparse.Namespace) -> int:
    require_training("pretraining the encoder")
    threads.configure(args.threads)  # before torch is imported
    # torch: imported by the commands that train, not by `serve`
    from training.encoder import (
        BuildSettings,
        EncoderShape,
        PretrainedEncoder,
        build,
        encoder_words,
        file_checksum,
    )

    if args.words < 1 or args.epochs < 1 or (args.limit is not None and args.limit < 1):
        raise CliError("--words, --epochs and --limit must be at least 1")
    texts = read_corpus(args.corpus, args.limit)
    teacher = load_encoder(args.teacher)
    say = _stderr_line if sys.stderr.isatty() else _stderr_print
    say(f"{len(texts)} messages; the teacher encodes them in chunks (cached, resumable)")
    targets = embed_corpus(texts, teacher, progress=lambda d, n, t: say(f"encoded {d}/{n} in {t:.0f}s"))
    init = PretrainedEncoder.load(args.init) if args.init else None
    shape = EncoderShape() if init is None else init.shape
    if init is None:
        words = encoder_words(
            texts, TrainConfig().tokenizer_config(), encoder_table(teacher).words, args.words
        )
        rows = for_vocabulary(args.teacher, [PAD, UNK, *words], Counter(), 0).matrix[2:]
    else:
        words, rows = init.words, None
    corpus: dict[str, Any] = {
        "file": Path(args.corpus).name,
        "checksum": corpus_checksum(texts),
        "messages": len(texts),
    }
    sources = Path(args.corpus).with_suffix(".sources.json")  # written by scripts/encoder_corpus.py
    if sources.is_file():
        corpus["made_by"] = json.loads(sources.read_text(encoding="utf-8"))
    facts = {"teacher": {"source": teacher.source, "checksum": teacher.checksum}, "corpus": corpus}
    settings = BuildSettings(epochs=args.epochs, seed=args.seed)
    built = build(texts, targets, words, rows, shape, settings, facts, progress=say, init=init)
    path = built.save(args.out)
    summary = {**built.facts, "file": path.name, "sha256": file_checksum(path).removeprefix("sha256:")}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    cosine = built.facts["held_out_cosine_by_epoch"][-1]
    print(f"encoder of {len(words)} words written to {path} (held-out cosine {cosine})")
    return 0


def _stderr_line(text: str) -> None:
    print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)


def _stderr_print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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
    except (
        CliError,
        DataError,
        ArtifactError,
        StoreError,
        EncoderUnavailable,
        TrainingUnavailable,
        ValueError,
        OSError,
    ) as exc:
        print(f"intently {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
