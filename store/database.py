"""PostgreSQL for the store, the job queue and the review inbox: a pool, the schema, its migrations.

The schema is versioned in `intently_schema`; the service migrates it itself on first use,
under an advisory lock so that replicas starting together migrate once. Every table is
prefixed `intently_`, so a database shared with other applications is fine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from store.model_store import StoreError, StoreUnavailable

# Arbitrary constants, fixed forever: the advisory locks of migration and of the first start.
MIGRATION_LOCK = 0x1A7E_0001
FIRST_START_LOCK = 0x1A7E_0002
ACTIVE_CHANNEL = "intently_active"  # NOTIFY on every change of the pointer
VERSIONS_CHANNEL = "intently_versions"  # NOTIFY on every new version: replicas fetch it ahead
CONNECT_TIMEOUT = 3  # seconds: a database that is down is noticed quickly
POOL_TIMEOUT = 4.0  # seconds a caller waits for a connection before the store is unavailable
STATEMENT_TIMEOUT = "60s"  # the longest statement: storing a large version on a slow link
# A database host that vanishes without closing its connections (a network split) is noticed
# by TCP keepalives and the kernel's timeout for unacknowledged data, not after hours.
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # milliseconds
}

# Each entry migrates the schema from version i to i + 1; never edit one that has shipped.
MIGRATIONS = (
    """
    CREATE TABLE intently_versions (
        version text PRIMARY KEY,
        created_at timestamptz NOT NULL DEFAULT now(),
        meta bytea NOT NULL
    );
    CREATE TABLE intently_files (
        version text NOT NULL REFERENCES intently_versions ON DELETE CASCADE,
        name text NOT NULL,
        content bytea NOT NULL,
        sha256 text NOT NULL,
        PRIMARY KEY (version, name)
    );
    CREATE TABLE intently_pointer (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version text REFERENCES intently_versions ON DELETE RESTRICT,
        history text[] NOT NULL DEFAULT '{}',
        changed_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO intently_pointer DEFAULT VALUES;
    CREATE TABLE intently_jobs (
        id text PRIMARY KEY,
        seq bigserial NOT NULL,
        state text NOT NULL,
        mode text NOT NULL,
        activate text NOT NULL,
        options text NOT NULL,
        examples integer NOT NULL,
        data bytea NOT NULL,
        rules text,
        created_at text NOT NULL,
        started_at text,
        finished_at text,
        heartbeat double precision,
        host text,
        pid integer,
        epoch integer NOT NULL DEFAULT 0,
        epochs integer NOT NULL DEFAULT 0,
        base_version text,
        version text,
        activated integer NOT NULL DEFAULT 0,
        activation_reason text,
        metrics text,
        error text
    );
    -- One running job per store, whatever races the claims run.
    CREATE UNIQUE INDEX intently_jobs_one_running ON intently_jobs (state) WHERE state = 'running';
    CREATE INDEX intently_jobs_queued ON intently_jobs (seq) WHERE state = 'queued';
    """,
    # 2: the processes that claim jobs (trainers) say they are alive, so that a job queued where
    # none is says so (store/jobs.py, Trainers).
    """
    CREATE TABLE intently_trainers (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        kind text NOT NULL,
        started_at text NOT NULL,
        seen double precision NOT NULL,
        stopped boolean NOT NULL DEFAULT false
    );
    """,
    # 3: the review inbox (store/review.py); an item's id is a hash of its text.
    """
    CREATE TABLE intently_review (
        seq bigserial NOT NULL UNIQUE,
        id text PRIMARY KEY,
        text text NOT NULL,
        intent text NOT NULL,
        confidence double precision NOT NULL,
        out_of_scope integer NOT NULL,
        reason text NOT NULL,
        model_version text NOT NULL,
        ranking text NOT NULL,
        count integer NOT NULL,
        first_seen double precision NOT NULL,
        last_seen double precision NOT NULL,
        label text,
        discarded integer NOT NULL DEFAULT 0,
        used_in text
    );
    CREATE INDEX intently_review_last_seen ON intently_review (last_seen);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(f"INTENTLY_DATABASE_URL is not a valid PostgreSQL URL: {exc}") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', 'localhost')}{port}/{parts.get('dbname', '')}"


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Every pooled connection: no statement may hang a caller (a lock held elsewhere, a slow disk)."""
    conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    conn.commit()


class Database:
    """One pool per process and URL; every `connection()` block is one transaction."""

    def __init__(self, url: str, max_size: int = 8):
        self.url = url
        self.where = redacted(url)
        self._max_size = max_size
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._lock = threading.Lock()
        self._migrated = False

    def _get_pool(self) -> psycopg_pool.ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self._max_size,
                    timeout=POOL_TIMEOUT,
                    kwargs=CONNECTION_OPTIONS,
                    configure=_configure,
                    # A connection broken by a database restart is replaced, not handed out.
                    check=psycopg_pool.ConnectionPool.check_connection,
                    open=False,
                    name="intently",
                )
                self._pool.open(wait=False)
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction, committed when the block ends without error."""
        if not self._migrated:
            self.migrate()
        with self._translated_errors(), self._get_pool().connection() as conn:
            yield conn

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool, in autocommit (for LISTEN)."""
        with self._translated_errors():
            return psycopg.connect(self.url, autocommit=True, **CONNECTION_OPTIONS)

    def migrate(self) -> int:
        """Bring the schema to this release's version; returns the version found before."""
        with self._translated_errors(), self._get_pool().connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS intently_schema (version integer NOT NULL)")
            row = conn.execute("SELECT max(version) FROM intently_schema").fetchone()
            found = int(row[0]) if row and row[0] is not None else 0
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self.where} has schema version {found}, newer than this release "
                    f"reads ({SCHEMA_VERSION}); upgrade Intently"
                )
            for version in range(found, SCHEMA_VERSION):
                conn.execute(MIGRATIONS[version])
                conn.execute("INSERT INTO intently_schema (version) VALUES (%s)", (version + 1,))
        self._migrated = True
        return found

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreUnavailable(
                f"the database {self.where} cannot be used right now ({reason}); retry shortly"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
