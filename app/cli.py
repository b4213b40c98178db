"""The `intently` command: `serve` and `worker` here, `train | evaluate | predict | models` from training."""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import tempfile

from app import logs
from app.config import UVICORN_OPTIONS, Settings, settings_store
from model.artifact import ArtifactError, load
from store.model_store import ModelStore, StoreError
from training import cli as training_cli
from training.available import can_train, require_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intently", description="Intent classification for chatbots: train, evaluate, serve."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training_cli.add_commands(sub)
    p = sub.add_parser("serve", help="serve a model over HTTP")
    p.add_argument("--model", help="serve this model directory (default: the model store's active version)")
    p.add_argument("--store", help="model store directory (default: $INTENTLY_MODEL_STORE)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--root-path", help="path prefix a proxy serves the app under, e.g. /intently")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "worker",
        help="a trainer: run the training jobs of a model store, one at a time (needs intently[train])",
    )
    p.add_argument("--store", help="model store directory (default: $INTENTLY_MODEL_STORE)")
    p.set_defaults(func=cmd_worker)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    # Workers are separate processes: they read their settings from the environment.
    for name, value in (
        ("MODEL_DIR", args.model),
        ("MODEL_STORE", args.store),
        ("HOST", args.host),
        ("PORT", args.port),
        ("WORKERS", args.workers),
        ("ROOT_PATH", args.root_path),
    ):
        if value is not None:
            os.environ[f"INTENTLY_{name}"] = str(value)
    try:
        settings = Settings()
    except ValueError as exc:
        raise training_cli.CliError(f"invalid setting: {exc}") from None
    if settings.model_dir is not None:
        load(settings.model_dir)  # fail here, with one line, rather than in every worker
    else:
        store = settings_store(settings)
        try:
            if store.active() is None:
                from training.default_model import SEED_ENV, ensure_default

                if os.environ.get(SEED_ENV) or not can_train():
                    # A copy (a Docker image has a seed), or without torch one line saying what to do.
                    if os.environ.get(SEED_ENV):
                        print("copying the built-in default model (first start only) ...", file=sys.stderr)
                    ensure_default(store, show_progress=True)
                else:
                    print("training the built-in default model (first start only) ...", file=sys.stderr)
                    _train_default_model_apart()
        finally:
            store.close()  # the workers open their own connections
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="intently-metrics-")

    import uvicorn

    # Here too, not only in each worker: with several workers, this process binds the port and
    # says where it listens.
    logs.configure(settings.log_level, settings.log_format)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:create_app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        root_path=settings.root_path,
        **UVICORN_OPTIONS,
    )
    return 0


def _train_default_model_apart() -> None:
    """Train the built-in model in a child process: training imports torch (some 200 MB that a
    process never gives back), which the serving process, here for days, must not carry."""
    child = multiprocessing.get_context("spawn").Process(
        target=_train_default_model, name="intently-first-start"
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise training_cli.CliError(f"the built-in default model was not trained (status {child.exitcode})")


def _train_default_model() -> None:
    """The child of `_train_default_model_apart`: settings from the environment, as `serve` set it."""
    from training import threads
    from training.default_model import ensure_default

    settings = Settings()
    threads.configure(settings.torch_threads)  # before torch is imported
    store = settings_store(settings)
    try:
        ensure_default(store, show_progress=True)
    except (ArtifactError, StoreError, OSError) as exc:
        print(f"intently serve: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        store.close()


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the jobs that servers queue, from the same store as `serve` (INTENTLY_MODEL_STORE or
    --store, INTENTLY_DATABASE_URL), until SIGTERM or SIGINT; a job in flight then fails as it
    does when a server stops, and a later job starts afresh on another trainer."""
    require_training("a trainer (`intently worker`)")
    if args.store is not None:
        os.environ["INTENTLY_MODEL_STORE"] = str(args.store)
    try:
        settings = Settings()
    except ValueError as exc:
        raise training_cli.CliError(f"invalid setting: {exc}") from None
    logs.configure(settings.log_level, settings.log_format)
    store = settings_store(settings)
    try:
        if store.active() is None:  # as `serve` does: slim replicas may be waiting for a first model
            from training.default_model import SEED_ENV, ensure_default

            how = "copying" if os.environ.get(SEED_ENV) else "training"
            print(f"{how} the built-in default model (first start only) ...", file=sys.stderr)
            ensure_default(store, show_progress=False)
        print(f"intently worker: running the training jobs of {store.describe()}", file=sys.stderr)
        asyncio.run(_work(store))
    finally:
        store.close()
    return 0


async def _work(store: ModelStore) -> None:
    from training.dispatcher import JobDispatcher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logging.getLogger("intently.jobs").info("trainer started", extra={"pid": os.getpid()})
    await JobDispatcher(store, kind="worker").run_until(stop)


def _exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM is how a service manager stops a server: exit 0 once uvicorn has drained.

    A single-worker uvicorn re-raises the signal it caught after its graceful
    shutdown, which would kill the process with it (exit 143) even though every
    request was answered; with this handler in place the process exits 0.
    """
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return training_cli.run(args)
    except (ArtifactError, StoreError) as exc:
        print(f"intently {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
