"""Training jobs: records in SQLite inside the model store, run one at a time in a child process.

The service queues a job (its examples saved beside the record), and any of
its workers may claim the next one; a claim is one SQLite transaction, so
only one job runs per store. The job itself runs as

    python -m training.jobs STORE JOB_ID

in its own process, so a crash or a kill cannot touch the serving workers,
and a version appears in the store whole or not at all.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import ctypes
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from model.artifact import ModelMeta
from model.predictor import Predictor
from model.store import ModelStore, StoreError
from training.config import TrainConfig
from training.evaluate import version_report_files
from training.metrics import summary
from training.readers import OOS, Example, NluData
from training.train import Progress, TrainResult, stratified_split, train

DB_FILE = "jobs.sqlite3"
JOBS_DIR = "jobs"
RULES_FILE = "rules.json"
STATES = ("queued", "running", "succeeded", "failed")
Mode = Literal["append", "replace"]
Policy = Literal["always", "never", "if_better"]
MODES: tuple[str, ...] = get_args(Mode)
POLICIES: tuple[str, ...] = get_args(Policy)
HEARTBEAT_SECONDS = 2.0
STALE_SECONDS = 20.0
MIN_HELD_OUT = 20  # fewer held-out examples than this cannot tell two models apart

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    mode TEXT NOT NULL,
    activate TEXT NOT NULL,
    options TEXT NOT NULL,
    examples INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    heartbeat REAL,
    host TEXT,
    pid INTEGER,
    epoch INTEGER NOT NULL DEFAULT 0,
    epochs INTEGER NOT NULL DEFAULT 0,
    base_version TEXT,
    version TEXT,
    activated INTEGER NOT NULL DEFAULT 0,
    activation_reason TEXT,
    metrics TEXT,
    error TEXT
)
"""


class JobError(ValueError):
    """A job request that cannot be accepted; the message says why."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class JobRequest:
    examples: list[Example]
    mode: Mode = "append"
    activate: Policy = "if_better"
    options: dict[str, Any] | None = None
    tolerance: float = 0.01
    # Synonyms, regexes, lookup tables and responses of an uploaded file (`NluData.rules()`).
    rules: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        if self.mode not in MODES:
            raise JobError(f"mode must be one of {list(MODES)}, not {self.mode!r}")
        if self.activate not in POLICIES:
            raise JobError(f"activate must be one of {list(POLICIES)}, not {self.activate!r}")
        if not self.examples:
            raise JobError("no examples given")
        try:
            config = TrainConfig.from_options(dict(self.options or {}))
        except ValueError as exc:
            raise JobError(f"options: {exc}") from None
        # A job is an HTTP request: it must not name files on the server or models to download.
        for name in ("vectors", "teacher"):
            if getattr(config, name) not in ("auto", ""):
                raise JobError(f"options: {name} must be 'auto' or '' in a training job")
        return config


class JobStore:
    """The job records of one model store."""

    def __init__(self, store: ModelStore, timeout: float = 10.0):
        self.store = store
        self.path = store.root / DB_FILE
        self.timeout = timeout  # how long to wait for another connection's lock

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.store.ensure()
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute(_SCHEMA)
            yield conn
        finally:
            conn.close()

    def job_dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise JobError(f"invalid job id {job_id[:40]!r}")
        return self.store.root / JOBS_DIR / job_id

    def submit(self, request: JobRequest) -> dict[str, Any]:
        config = request.validate()
        job_id = uuid.uuid4().hex[:16]
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True)
        lines = "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in request.examples)
        (folder / "examples.jsonl").write_text(lines, encoding="utf-8")
        if request.rules:
            (folder / RULES_FILE).write_text(json.dumps(request.rules, ensure_ascii=False), encoding="utf-8")
        options = {"train": dict(request.options or {}), "tolerance": request.tolerance}
        try:
            with self.connect() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, state, mode, activate, options, examples, created_at, epochs)"
                    " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        request.mode,
                        request.activate,
                        json.dumps(options),
                        len(request.examples),
                        _now(),
                        config.epochs,
                    ),
                )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no examples left behind without a record
            raise
        return self.get(job_id)

    def get(self, job_id: str) -> dict[str, Any]:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _public(row)

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
            return [_public(r) for r in rows.fetchall()]

    def update(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.connect() as conn:
            conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def fail_if_running(self, job_id: str, reason: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?"
                " WHERE id = ? AND state = 'running'",
                (_now(), reason, job_id),
            )

    def reap(self) -> builtins.list[str]:
        """Mark running jobs whose process is gone as failed; returns their ids."""
        failed = []
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(
                "SELECT id, host, pid, heartbeat FROM jobs WHERE state = 'running'"
            ).fetchall()
            for row in rows:
                if _is_dead(row["host"], row["pid"], row["heartbeat"]):
                    conn.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (
                            _now(),
                            "interrupted: the training process stopped before finishing "
                            "(server restart or kill); the active model was not changed",
                            row["id"],
                        ),
                    )
                    failed.append(row["id"])
            conn.execute("COMMIT")
        return failed

    def claim_next(self) -> str | None:
        """Atomically take the oldest queued job, unless one is already running."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM jobs WHERE state = 'running'").fetchone():
                    return None
                row = conn.execute(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1"
                ).fetchone()
                if row is None:
                    return None
                conn.execute(
                    "UPDATE jobs SET state = 'running', started_at = ?, heartbeat = ?, host = ?, pid = NULL"
                    " WHERE id = ?",
                    (_now(), time.time(), socket.gethostname(), row["id"]),
                )
                return str(row["id"])
            finally:
                conn.execute("COMMIT")


def _is_dead(host: str | None, pid: int | None, heartbeat: float | None) -> bool:
    if heartbeat is None or time.time() - heartbeat > STALE_SECONDS:
        return True
    if host == socket.gethostname() and pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _public(row: sqlite3.Row) -> dict[str, Any]:
    options = json.loads(row["options"])
    return {
        "id": row["id"],
        "state": row["state"],
        "mode": row["mode"],
        "activate": row["activate"],
        "options": options.get("train", {}),
        "examples": row["examples"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "progress": {"epoch": row["epoch"], "epochs": row["epochs"]},
        "base_version": row["base_version"],
        "version": row["version"],
        "activated": bool(row["activated"]),
        "activation_reason": row["activation_reason"],
        "metrics": json.loads(row["metrics"]) if row["metrics"] else None,
        "error": row["error"],
    }


# --- the job process -------------------------------------------------------


def _die_with_parent() -> None:
    """Linux: if the serving worker that started this job dies, so does the job."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_jsonl(path: Path) -> list[Example]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return _as_examples(rows)


def _as_examples(rows: Sequence[dict[str, Any]]) -> list[Example]:
    return [Example.from_json(r) for r in rows]


def _with_base_rules(nlu: NluData, base: ModelMeta) -> NluData:
    """An appended job keeps the active version's synonyms, patterns and responses; its own win."""
    merged = NluData.from_rules(
        {
            "synonyms": base.entity_synonyms,
            "regexes": base.entity_regexes,
            "lookups": base.entity_lookups,
            "responses": base.responses,
        }
    )
    merged.synonyms.update(nlu.synonyms)
    merged.regexes.update(nlu.regexes)
    merged.lookups.update(nlu.lookups)
    merged.responses.update(nlu.responses)
    return merged


def held_out_accuracy(predictor: Predictor, examples: Sequence[Example]) -> float:
    y_pred = [p.intent or OOS for p in predictor.predict_batch([e.text for e in examples], top_k=1)]
    return float(summary([e.intent for e in examples], y_pred)["accuracy"])


def appended(new: Sequence[Example], old: Sequence[Example]) -> list[Example]:
    """The old examples, then the new: a new one replaces an old one of the same text (any case),
    which is how a misclassification gets fixed."""
    fixed = {e.text.casefold() for e in new}
    return [e for e in old if e.text.casefold() not in fixed] + list(new)


@dataclass
class _JobData:
    """What a job trains on, and what its version is judged on."""

    kept: list[Example]  # the version's data, as the store keeps it
    training: list[Example]
    valid: list[Example]
    held_out: list[Example]  # the active version's held-out rows: both models are compared on them
    nlu: NluData


def run_job(store: ModelStore, job_id: str) -> None:
    """Train the job's version, add it to the store, and activate it as its policy says."""
    jobs = JobStore(store)
    job = jobs.get(job_id)
    options = json.loads(_row_options(jobs, job_id))
    base_version = store.active()
    jobs.update(job_id, base_version=base_version, pid=os.getpid())
    with _heartbeat(jobs, job_id):
        try:
            config = TrainConfig.from_options(options.get("train", {}))
            data = _job_data(store, jobs.job_dir(job_id), job["mode"], base_version, config)

            def progress(p: Progress) -> None:
                jobs.update(job_id, epoch=p.epoch, epochs=p.epochs, heartbeat=time.time())

            result = train(data.training, config, valid_examples=data.valid, progress=progress, nlu=data.nlu)
            result.meta.training["job"] = job_id
            result.meta.training["mode"] = job["mode"]
            version = store.add(
                result.net, result.meta, data.kept, result.valid_examples, version_report_files(result)
            )
            tolerance = float(options.get("tolerance", 0.01))
            activated, reason, comparison = _decide_activation(
                store, job["activate"], base_version, result, data.held_out, tolerance
            )
            if activated:
                store.activate(version)
            jobs.update(
                job_id,
                state="succeeded",
                finished_at=_now(),
                version=version,
                activated=int(activated),
                activation_reason=reason,
                metrics=json.dumps({"validation": result.meta.metrics, **comparison}),
            )
        except Exception as exc:
            message = str(exc) if isinstance(exc, ValueError | StoreError) else f"{type(exc).__name__}: {exc}"
            jobs.update(job_id, state="failed", finished_at=_now(), error=message)
            traceback.print_exc()


@contextmanager
def _heartbeat(jobs: JobStore, job_id: str) -> Iterator[None]:
    """Beat while the job runs: a job whose beats stop is reaped as failed."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            jobs.update(job_id, heartbeat=time.time())

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def _job_data(
    store: ModelStore, folder: Path, mode: str, base_version: str | None, config: TrainConfig
) -> _JobData:
    """`replace`: the job's examples, split afresh. `append`: the active version's data plus them,
    validated on the active version's held-out rows (those the job's examples leave) plus a share of
    the new ones, so that both versions are judged on rows neither trained on."""
    new = _read_jsonl(folder / "examples.jsonl")
    rules = folder / RULES_FILE
    nlu = NluData.from_rules(json.loads(rules.read_text("utf-8")) if rules.exists() else {})
    held_out = _as_examples(store.read_data(base_version, held_out=True)) if base_version else []
    if mode != "append":
        training, valid = stratified_split(new, config.valid_fraction, config.seed)
        return _JobData(new, training, valid, held_out, nlu)
    if not base_version:
        raise JobError("mode 'append' needs an active version to append to")
    kept = appended(new, _as_examples(store.read_data(base_version)))
    nlu = _with_base_rules(nlu, store.meta(base_version))
    fixed = {e.text.casefold() for e in new}
    held_out = [e for e in held_out if e.text.casefold() not in fixed]
    if len(held_out) < MIN_HELD_OUT:  # the base version kept no usable held-out set: split afresh
        training, valid = stratified_split(kept, config.valid_fraction, config.seed)
        return _JobData(kept, training, valid, held_out, nlu)
    held = {(e.text, e.intent) for e in held_out}
    new_train, new_valid = stratified_split(new, config.valid_fraction, config.seed)
    training = [e for e in kept[: len(kept) - len(new)] if (e.text, e.intent) not in held] + new_train
    return _JobData(kept, training, held_out + new_valid, held_out, nlu)


def _row_options(jobs: JobStore, job_id: str) -> str:
    with jobs.connect() as conn:
        return str(conn.execute("SELECT options FROM jobs WHERE id = ?", (job_id,)).fetchone()["options"])


def _decide_activation(
    store: ModelStore,
    policy: str,
    base_version: str | None,
    result: TrainResult,
    held_out: list[Example],
    tolerance: float,
) -> tuple[bool, str, dict[str, Any]]:
    if policy == "always":
        return True, "activation policy 'always'", {}
    if policy == "never":
        return False, "activation policy 'never'", {}
    if base_version is None:
        return True, "no active version to compare with", {}
    # Both models on the same examples, held out from both: the active version's validation set.
    examples = held_out if len(held_out) >= MIN_HELD_OUT else result.valid_examples
    if not examples:
        return False, "no held-out examples to compare on; activate by hand", {}
    new = held_out_accuracy(Predictor(result.net, result.meta, result.tokenizer), examples)
    active = held_out_accuracy(Predictor.load(store.path(base_version)), examples)
    comparison = {
        "comparison": {
            "examples": len(examples),
            "new_accuracy": round(new, 5),
            "active_accuracy": round(active, 5),
            "tolerance": tolerance,
        }
    }
    if new + tolerance >= active:
        return (
            True,
            f"accuracy {new:.4f} vs active {active:.4f} on {len(examples)} held-out examples",
            comparison,
        )
    return (
        False,
        (
            f"not activated: accuracy {new:.4f} is below the active version's {active:.4f} "
            f"(tolerance {tolerance}) on {len(examples)} held-out examples"
        ),
        comparison,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m training.jobs STORE JOB_ID\n")
        return 2
    _die_with_parent()
    threads = int(os.environ.get("INTENTLY_TRAIN_THREADS", "1"))
    import torch

    torch.set_num_threads(max(1, threads))  # leave the other core to the serving workers
    run_job(ModelStore(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
