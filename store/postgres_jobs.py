"""The job queue on PostgreSQL: a table beside the versions, for many replicas.

Apart from store/jobs.py so that a process on a directory store never imports psycopg
(several MB of every serving worker); `open_job_store` imports it when the store is PostgreSQL.
"""

from __future__ import annotations

import builtins
import json
from typing import Any

from psycopg import errors as pg_errors
from psycopg.rows import dict_row

import store.jobs
from store.jobs import (
    HOST,
    INTERRUPTED,
    PUBLIC_COLUMNS,
    JobInput,
    JobRequest,
    JobStore,
    Trainers,
    add_messages,
    job_input,
    now_text,
    process_dead,
    public_record,
)
from store.model_store import jsonl
from store.postgres import PostgresStore

_UPDATABLE = {*PUBLIC_COLUMNS.replace(" ", "").split(","), "pid", "host"} - {"id", "heartbeat"}
# The database's clock, not the replica's: heartbeats written and judged on one clock.
_DB_NOW = "extract(epoch from clock_timestamp())"


class PostgresJobStore(JobStore):
    """A table beside the versions in PostgreSQL: for many replicas."""

    def __init__(self, store: PostgresStore):
        super().__init__(store)
        self.db = store.db

    def _insert(self, job_id: str, request: JobRequest, epochs: int) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO intently_jobs"
                " (id, state, mode, activate, options, examples, data, rules, created_at, epochs)"
                " VALUES (%s, 'queued', %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    job_id,
                    request.mode,
                    request.activate,
                    request.stored_options(),
                    len(request.examples),
                    jsonl(e.to_json() for e in request.examples),
                    json.dumps(request.rules, ensure_ascii=False) if request.rules else None,
                    now_text(),
                    epochs,
                ),
            )

    def get(self, job_id: str) -> dict[str, Any]:
        with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            query = f"SELECT {PUBLIC_COLUMNS} FROM intently_jobs WHERE id = %s"
            row = cur.execute(query, (job_id,)).fetchone()
        return self._record(job_id, row)

    def input(self, job_id: str) -> JobInput:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT options, data, rules FROM intently_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        if row is None:
            raise KeyError(job_id)
        return job_input(row[0], bytes(row[1]), row[2])

    def list(self, limit: int = 100) -> builtins.list[dict[str, Any]]:
        with self.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(
                f"SELECT {PUBLIC_COLUMNS} FROM intently_jobs ORDER BY seq DESC LIMIT %s", (limit,)
            ).fetchall()
        records = [public_record(r) for r in rows]
        add_messages(records, self.trainers)
        return records

    def update(self, job_id: str, only_if_running: bool = False, **fields: Any) -> bool:
        unknown = set(fields) - _UPDATABLE
        if unknown or not fields:
            raise ValueError(f"unknown job fields {sorted(unknown)}" if unknown else "no fields to update")
        cols = ", ".join(f"{k} = %s" for k in fields)
        where = " AND state = 'running'" if only_if_running else ""
        # Column names are checked above; only values are parameters.
        query = f"UPDATE intently_jobs SET {cols} WHERE id = %s{where}"
        with self.db.connection() as conn:
            return conn.execute(query, (*fields.values(), job_id)).rowcount > 0

    def beat(self, job_id: str) -> bool:
        query = f"UPDATE intently_jobs SET heartbeat = {_DB_NOW} WHERE id = %s AND state = 'running'"
        with self.db.connection() as conn:
            return conn.execute(query, (job_id,)).rowcount > 0

    def fail_if_running(self, job_id: str, reason: str) -> None:
        with self.db.connection() as conn:
            conn.execute(
                "UPDATE intently_jobs SET state = 'failed', finished_at = %s, error = %s"
                " WHERE id = %s AND state = 'running'",
                (now_text(), reason, job_id),
            )

    def reap(self) -> builtins.list[str]:
        with self.db.connection() as conn:
            rows = conn.execute(
                f"SELECT id, host, pid, {_DB_NOW} - heartbeat FROM intently_jobs"
                " WHERE state = 'running' FOR UPDATE SKIP LOCKED"
            ).fetchall()
            failed = [job_id for job_id, host, pid, age in rows if process_dead(host, pid, age)]
            if failed:
                conn.execute(
                    "UPDATE intently_jobs SET state = 'failed', finished_at = %s, error = %s"
                    " WHERE id = ANY(%s) AND state = 'running'",
                    (now_text(), INTERRUPTED, failed),
                )
        return failed

    def claim_next(self) -> str | None:
        try:
            with self.db.connection() as conn:
                row = conn.execute(
                    "SELECT id FROM intently_jobs WHERE state = 'queued'"
                    " AND NOT EXISTS (SELECT 1 FROM intently_jobs WHERE state = 'running')"
                    " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"
                ).fetchone()
                if row is None:
                    return None
                conn.execute(
                    f"UPDATE intently_jobs SET state = 'running', started_at = %s, heartbeat = {_DB_NOW},"
                    " host = %s, pid = NULL WHERE id = %s",
                    (now_text(), HOST, row[0]),
                )
                return str(row[0])
        except pg_errors.UniqueViolation:  # another replica claimed a job in the same instant
            return None

    def trainer_beat(self, trainer: str, kind: str, stopped: bool = False) -> None:
        host, _, pid = trainer.rpartition("/")
        with self.db.connection() as conn:
            conn.execute(
                "INSERT INTO intently_trainers (id, host, pid, kind, started_at, seen, stopped)"
                f" VALUES (%s, %s, %s, %s, %s, {_DB_NOW}, %s)"
                " ON CONFLICT (id) DO UPDATE SET seen = excluded.seen, stopped = excluded.stopped",
                (trainer, host, int(pid or 0), kind, now_text(), stopped),
            )
            conn.execute(
                f"DELETE FROM intently_trainers WHERE seen < {_DB_NOW} - %s",
                (store.jobs.TRAINER_FORGET_SECONDS,),
            )

    def trainers(self) -> Trainers:
        with self.db.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FILTER (WHERE NOT stopped AND {_DB_NOW} - seen <= %s),"
                f" {_DB_NOW} - max(seen) FROM intently_trainers",
                (store.jobs.STALE_SECONDS,),  # read when called: one value for both backends
            ).fetchone()
        alive, age = row if row is not None else (0, None)
        return Trainers(int(alive), None if age is None else max(0.0, float(age)))
