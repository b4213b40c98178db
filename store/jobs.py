"""Training job records: queued, claimed, beating, finished; in the store's own backend.

With a directory store the records are SQLite inside it (`jobs.sqlite3`, the examples in
`jobs/<id>/`); with PostgreSQL they are a table beside the versions (store/database.py).
Either way a claim is one transaction and only one job runs per store at a time.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from store.directory import DirectoryStore
from store.model_store import ModelStore, StoreUnavailable, jsonl, read_jsonl

DB_FILE = "jobs.sqlite3"
JOBS_DIR = "jobs"
EXAMPLES_FILE = "examples.jsonl"
RULES_FILE = "rules.json"
LOG_FILE = "job.log"
STATES = ("queued", "running", "succeeded", "failed")
Mode = Literal["append", "replace"]
Policy = Literal["always", "never", "if_better"]
MODES: tuple[str, ...] = get_args(Mode)
POLICIES: tuple[str, ...] = get_args(Policy)
STALE_SECONDS = 20.0  # a running job whose heartbeat is older than this has lost its process
# A trainer (a process that claims jobs: `intently worker`, or `intently serve` where torch is)
# says it is alive this often; one not heard from for STALE_SECONDS is gone.
TRAINER_BEAT_SECONDS = 5.0
TRAINER_FORGET_SECONDS = 7 * 24 * 3600.0  # rows of trainers gone longer than this are removed
INTERRUPTED = (
    "interrupted: the training process stopped before finishing (server restart or kill); "
    "the active model was not changed"
)

_SQLITE_SCHEMA = """
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
_SQLITE_TRAINERS = """
CREATE TABLE IF NOT EXISTS trainers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    seen REAL NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
)
"""


class JobError(ValueError):
    """A job request that cannot be accepted; the message says why."""


def _host() -> str:
    """Who claims a job: the host name and the process namespace, since containers may share a name
    (host networking) while their process ids mean different processes."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


HOST = _host()


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Row(Protocol):
    """An example as a job keeps it: training's `Example`, stored as its JSON row."""

    def to_json(self) -> dict[str, Any]: ...


@dataclass
class JobRequest:
    """A job as queued. The store checks its shape; training checks its options (training/job_request.py)."""

    examples: Sequence[Row]
    mode: Mode = "append"
    activate: Policy = "if_better"
    options: dict[str, Any] | None = None
    tolerance: float = 0.01
    # Synonyms, regexes, lookup tables and responses of an uploaded file (`NluData.rules()`).
    rules: dict[str, Any] = field(default_factory=dict)
    # Ids of the review inbox's items among `examples` (`from_review`): marked used once activated.
    review_items: Sequence[str] = ()

    def check(self) -> None:
        if self.mode not in MODES:
            raise JobError(f"mode must be one of {list(MODES)}, not {self.mode!r}")
        if self.activate not in POLICIES:
            raise JobError(f"activate must be one of {list(POLICIES)}, not {self.activate!r}")
        if not self.examples:
            raise JobError("no examples given")

    def stored_options(self) -> str:
        stored: dict[str, Any] = {"train": dict(self.options or {}), "tolerance": self.tolerance}
        if self.review_items:
            stored["review_items"] = list(self.review_items)
        return json.dumps(stored)


@dataclass
class JobInput:
    """What a job process reads back: the request as it was queued."""

    examples: builtins.list[dict[str, Any]]  # JSON rows: `Example.from_json` reads them back
    rules: dict[str, Any]
    options: dict[str, Any]
    tolerance: float
    review_items: builtins.list[str] = field(default_factory=builtins.list)


class JobStore(ABC):
    """The job records of one model store."""

    def __init__(self, store: ModelStore):
        self.store = store

    def submit(self, request: JobRequest, epochs: int) -> dict[str, Any]:
        """Queue `request`, whose options training has checked; `epochs`: its planned epochs (progress)."""
        request.check()
        job_id = uuid.uuid4().hex[:16]
        self._insert(job_id, request, epochs)
        return self.get(job_id)

    def job_dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise JobError(f"invalid job id {job_id[:40]!r}")
        return self.store.root / JOBS_DIR / job_id

    def log_path(self, job_id: str) -> Path:
        """Where this machine keeps the job's output (the training process's stdout and stderr)."""
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / LOG_FILE

    @abstractmethod
    def _insert(self, job_id: str, request: JobRequest, epochs: int) -> None: ...

    @abstractmethod
    def get(self, job_id: str) -> dict[str, Any]:
        """The public record; KeyError if there is none."""

    @abstractmethod
    def input(self, job_id: str) -> JobInput: ...

    @abstractmethod
    def list(self, limit: int = 100) -> builtins.list[dict[str, Any]]: ...

    @abstractmethod
    def update(self, job_id: str, only_if_running: bool = False, **fields: Any) -> bool:
        """Set `fields`; with `only_if_running`, only while the job runs. True if the row changed."""

    @abstractmethod
    def beat(self, job_id: str) -> bool:
        """The job is alive: its heartbeat is now. False if it no longer runs (reaped meanwhile)."""

    @abstractmethod
    def fail_if_running(self, job_id: str, reason: str) -> None: ...

    @abstractmethod
    def reap(self) -> builtins.list[str]:
        """Mark running jobs whose process is gone as failed; returns their ids."""

    @abstractmethod
    def claim_next(self) -> str | None:
        """Atomically take the oldest queued job, unless one is already running."""

    @abstractmethod
    def trainer_beat(self, trainer: str, kind: str, stopped: bool = False) -> None:
        """`trainer` (see `trainer_id`), a process that claims jobs, is alive; or, `stopped`, has stopped."""

    @abstractmethod
    def trainers(self) -> Trainers:
        """How many trainers are alive, and how long ago the last one was heard of."""

    def _record(self, job_id: str, row: Mapping[str, Any] | None) -> dict[str, Any]:
        """The public record of the job in `row`, with its message; KeyError when there is no row."""
        if row is None:
            raise KeyError(job_id)
        record = public_record(row)
        add_messages([record], self.trainers)
        return record


def open_job_store(store: ModelStore, timeout: float = 10.0) -> JobStore:
    """The job records kept with `store`; `timeout`: how long to wait for a lock."""
    if isinstance(store, DirectoryStore):
        return SqliteJobStore(store, timeout)
    from store.postgres import PostgresStore
    from store.postgres_jobs import PostgresJobStore

    if isinstance(store, PostgresStore):
        return PostgresJobStore(store)
    raise TypeError(f"no job store for {type(store).__name__}")


def process_dead(host: str | None, pid: int | None, age: float | None) -> bool:
    """A running job's process is gone: its heartbeat is stale, or (same host) its pid has exited."""
    if age is None or age > STALE_SECONDS:
        return True
    if host == HOST and pid:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@dataclass(frozen=True)
class Trainers:
    """What the job store knows of its trainers: how many are alive, and when one was last heard of."""

    alive: int
    last_seen_age: float | None  # seconds since the newest heartbeat of any trainer; None: never one

    def waiting_message(self) -> str:
        """What a queued job is waiting for, in words (the `message` of its public record)."""
        if self.alive:
            return f"queued: {self.alive} trainer(s) alive; it runs when the jobs before it have finished"
        start = "start `intently worker` where the training extra is (pip install 'intently[train]')"
        if self.last_seen_age is None:
            return f"waiting for a trainer: none has ever been seen by this store; {start}"
        return f"waiting for a trainer: none has been seen for {int(self.last_seen_age)} s; {start}"


def trainer_id() -> str:
    """This process as a trainer: the host (with its process namespace) and the pid."""
    return f"{HOST}/{os.getpid()}"


# Shaping job rows into records and inputs: both job stores (SQLite here, store/postgres_jobs.py).


def public_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job row as the API shows it."""
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
        "message": None,
    }


def add_messages(records: builtins.list[dict[str, Any]], trainers: Callable[[], Trainers]) -> None:
    """Queued records say what they wait for; `trainers` is asked only when one is queued."""
    queued = [r for r in records if r["state"] == "queued"]
    if queued:
        message = trainers().waiting_message()
        for record in queued:
            record["message"] = message


def job_input(options: str, examples: bytes, rules: str | None) -> JobInput:
    """What a trainer needs from a job's stored columns."""
    stored = json.loads(options)
    return JobInput(
        examples=read_jsonl(examples),
        rules=json.loads(rules) if rules else {},
        options=stored.get("train", {}),
        tolerance=float(stored.get("tolerance", 0.01)),
        review_items=[str(i) for i in stored.get("review_items", [])],
    )


# The columns `public_record` reads.
PUBLIC_COLUMNS = (
    "id, state, mode, activate, options, examples, created_at, started_at, finished_at, epoch, epochs,"
    " base_version, version, activated, activation_reason, metrics, error"
)


class SqliteJobStore(JobStore):
    """SQLite in WAL mode inside the store directory: for one machine's workers."""

    def __init__(self, store: DirectoryStore, timeout: float = 10.0):
        super().__init__(store)
        self.path = store.root / DB_FILE
        self.timeout = timeout

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.store.ensure()
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the job store {self.path} cannot be opened ({exc}); retry") from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute(_SQLITE_SCHEMA)
            conn.execute(_SQLITE_TRAINERS)
            yield conn
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the job store {self.path} cannot be used ({exc}); retry") from None
        finally:
            conn.close()

    def _insert(self, job_id: str, request: JobRequest, epochs: int) -> None:
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True)
        try:
            (folder / EXAMPLES_FILE).write_bytes(jsonl(e.to_json() for e in request.examples))
            if request.rules:
                (folder / RULES_FILE).write_text(json.dumps(request.rules, ensure_ascii=False), "utf-8")
            with self.connect() as conn:
                conn.execute(
                    "INSERT INTO jobs (id, state, mode, activate, options, examples, created_at, epochs)"
                    " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        request.mode,
                        request.activate,
                        request.stored_options(),
                        len(request.examples),
                        now_text(),
                        epochs,
                    ),
                )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # no examples left behind without a record
            raise

    def get(self, job_id: str) -> dict[str, Any]:
        with self.connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._record(job_id, row)

    def input(self, job_id: str) -> JobInput:
        with self.connect() as conn:
            row = conn.execute("SELECT options FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        folder = self.job_dir(job_id)
        rules = folder / RULES_FILE
        return job_input(
            row["options"],
            (folder / EXAMPLES_FILE).read_bytes(),
            rules.read_text("utf-8") if rules.exists() else None,
        )

    def list(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))
            records = [public_record(r) for r in rows.fetchall()]
        add_messages(records, self.trainers)
        return records

    def update(self, job_id: str, only_if_running: bool = False, **fields: Any) -> bool:
        if not fields:
            raise ValueError("no fields to update")
        cols = ", ".join(f"{k} = ?" for k in fields)
        where = " AND state = 'running'" if only_if_running else ""
        with self.connect() as conn:
            cur = conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?{where}", (*fields.values(), job_id))
            return cur.rowcount > 0

    def beat(self, job_id: str) -> bool:
        return self.update(job_id, only_if_running=True, heartbeat=time.time())

    def fail_if_running(self, job_id: str, reason: str) -> None:
        with self.connect() as conn:
            conn.execute(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?"
                " WHERE id = ? AND state = 'running'",
                (now_text(), reason, job_id),
            )

    def reap(self) -> builtins.list[str]:
        failed = []
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            query = "SELECT id, host, pid, heartbeat FROM jobs WHERE state = 'running'"
            rows = conn.execute(query).fetchall()
            for row in rows:
                age = None if row["heartbeat"] is None else time.time() - row["heartbeat"]
                if process_dead(row["host"], row["pid"], age):
                    conn.execute(
                        "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (now_text(), INTERRUPTED, row["id"]),
                    )
                    failed.append(row["id"])
            conn.execute("COMMIT")
        return failed

    def claim_next(self) -> str | None:
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
                    (now_text(), time.time(), HOST, row["id"]),
                )
                return str(row["id"])
            finally:
                conn.execute("COMMIT")

    def trainer_beat(self, trainer: str, kind: str, stopped: bool = False) -> None:
        now = time.time()
        host, _, pid = trainer.rpartition("/")
        with self.connect() as conn:
            conn.execute(
                "INSERT INTO trainers (id, host, pid, kind, started_at, seen, stopped)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET seen = excluded.seen, stopped = excluded.stopped",
                (trainer, host, int(pid or 0), kind, now_text(), now, int(stopped)),
            )
            conn.execute("DELETE FROM trainers WHERE seen < ?", (now - TRAINER_FORGET_SECONDS,))

    def trainers(self) -> Trainers:
        now = time.time()
        with self.connect() as conn:
            alive, newest = conn.execute(
                "SELECT count(*) FILTER (WHERE NOT stopped AND seen >= ?), max(seen) FROM trainers",
                (now - STALE_SECONDS,),
            ).fetchone()
        return Trainers(int(alive), None if newest is None else max(0.0, now - newest))
