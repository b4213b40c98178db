"""The store in PostgreSQL, for many replicas: the database is the one source of truth.

Versions (every file of each, as bytea with its SHA-256), the active pointer and its
history live in the database (schema in store/database.py). The local directory is only
this replica's cache of the versions it has used, each checked against the database's
checksums before it is trusted; it may be lost at any time. Activation and rollback are
one transaction that also sends NOTIFY, so every replica hears of a new version at once.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from model.artifact import META_FILE, ModelMeta, fsync_dir, parse_meta
from store.database import ACTIVE_CHANNEL, FIRST_START_LOCK, VERSIONS_CHANNEL, Database
from store.model_store import (
    DATABASE_URL_ENV,
    VERSIONS_DIR,
    ModelStore,
    Pointer,
    StoreError,
    VersionNotFound,
    check_version_id,
)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class PostgresStore(ModelStore):
    def __init__(self, url: str, cache: str | Path):
        self.db = Database(url)
        self.root = Path(cache)
        self._verified: set[str] = set()  # versions whose cached copy this process has checked
        self._listener: psycopg.Connection[Any] | None = None

    def describe(self) -> str:
        return self.db.where

    def child_env(self) -> dict[str, str]:
        return {DATABASE_URL_ENV: self.db.url}

    # --- reading -------------------------------------------------------

    def exists(self, version: str) -> bool:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM intently_versions WHERE version = %s", (check_version_id(version),)
            ).fetchone()
        return row is not None

    def list_ids(self) -> builtins.list[str]:
        with self.db.connection() as conn:
            return [r[0] for r in conn.execute("SELECT version FROM intently_versions ORDER BY version")]

    def meta(self, version: str) -> ModelMeta:
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT meta FROM intently_versions WHERE version = %s", (check_version_id(version),)
            ).fetchone()
        if row is None:
            raise VersionNotFound(f"no version {version!r} in the store")
        return parse_meta(bytes(row[0]), f"{META_FILE} of version {version} in {self.db.where}")

    def pointer(self) -> Pointer:
        with self.db.connection() as conn:
            row = conn.execute("SELECT version, history FROM intently_pointer").fetchone()
        return Pointer(row[0], tuple(row[1])) if row else Pointer()

    def path(self, version: str) -> Path:
        """The cached copy of `version`, fetched from the database first if missing or changed."""
        local = self.root / VERSIONS_DIR / check_version_id(version)
        if version in self._verified and local.is_dir():
            return local
        with self.db.connection() as conn:
            query = "SELECT name, sha256 FROM intently_files WHERE version = %s"
            sums = dict(conn.execute(query, (version,)).fetchall())
            if not sums:  # no such version (any cached copy is of a deleted one)
                _remove_dir(local)
                return local
            if not _matches(local, sums):
                # Binary results: bytea as raw bytes, not twice as many hex digits to decode.
                query = "SELECT name, content FROM intently_files WHERE version = %s"
                rows = conn.execute(query, (version,), binary=True).fetchall()
                self._write_cache(version, {name: bytes(content) for name, content in rows}, sums)
        self._verified.add(version)
        return local

    def _check_loads(self, version: str) -> None:
        """As for any store, and the database's own copy must match its checksums: a replica
        whose cached copy is intact must not activate what the others would refuse."""
        super()._check_loads(version)
        with self.db.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM intently_files WHERE version = %s"
                " AND encode(sha256(content), 'hex') <> sha256",
                (version,),
            ).fetchone()
        if row and row[0]:
            raise StoreError(f"version {version} is damaged in {self.db.where} (a file fails its checksum)")

    # --- writing -------------------------------------------------------

    def _put(self, version: str, staged: Path) -> None:
        files = {p.name: p.read_bytes() for p in sorted(staged.iterdir())}
        try:
            with self.db.connection() as conn:
                query = "INSERT INTO intently_versions (version, meta) VALUES (%s, %s)"
                conn.execute(query, (version, files[META_FILE]))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO intently_files (version, name, content, sha256) VALUES (%s, %s, %s, %s)",
                        [(version, name, content, _sha256(content)) for name, content in files.items()],
                    )
                conn.execute("SELECT pg_notify(%s, %s)", (VERSIONS_CHANNEL, version))
        except pg_errors.UniqueViolation:
            raise StoreError(f"version {version} already exists") from None
        local = self.root / VERSIONS_DIR / version
        _remove_dir(local)
        os.rename(staged, local)  # the files just stored are this replica's cache of them
        self._verified.add(version)

    def _change_pointer(self, change: Callable[[Pointer], Pointer | None]) -> None:
        try:
            with self.db.connection() as conn:
                row = conn.execute("SELECT version, history FROM intently_pointer FOR UPDATE").fetchone()
                new = change(Pointer(row[0], tuple(row[1])) if row else Pointer())
                if new is None:
                    return
                conn.execute(
                    "UPDATE intently_pointer SET version = %s, history = %s, changed_at = now()",
                    (new.version, builtins.list(new.history)),
                )
                conn.execute("SELECT pg_notify(%s, %s)", (ACTIVE_CHANNEL, new.version or ""))
        except pg_errors.ForeignKeyViolation:
            raise VersionNotFound("the version was deleted while it was being activated") from None

    def delete(self, version: str) -> None:
        check_version_id(version)
        with self.db.connection() as conn:
            row = conn.execute("SELECT version FROM intently_pointer FOR UPDATE").fetchone()
            if row and row[0] == version:
                raise StoreError(f"version {version} is active and cannot be deleted")
            deleted = conn.execute("DELETE FROM intently_versions WHERE version = %s", (version,)).rowcount
        if not deleted:
            raise VersionNotFound(f"no version {version!r} in the store")
        self._verified.discard(version)
        _remove_dir(self.root / VERSIONS_DIR / version)

    @contextmanager
    def first_start(self) -> Iterator[None]:
        with self.db.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (FIRST_START_LOCK,))
            conn.commit()  # the lock is the session's: no transaction stays open while it is held
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (FIRST_START_LOCK,))

    # --- change notification -------------------------------------------

    def wait_for_change(self, timeout: float) -> None:
        """LISTEN for activations; with the database unreachable, this is a plain wait (polling).

        A new version, stored anywhere, is fetched into the cache as soon as it is announced,
        so that its activation, moments later, only has to load it.
        """
        deadline = time.monotonic() + timeout
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self.db.connect()
                self._listener.execute(f"LISTEN {ACTIVE_CHANNEL}")
                self._listener.execute(f"LISTEN {VERSIONS_CHANNEL}")
            for notice in self._listener.notifies(timeout=timeout, stop_after=1):
                if notice.channel == VERSIONS_CHANNEL:
                    with suppress(StoreError):  # a bad one is reported when it is used
                        self.path(notice.payload)
                return
        except (psycopg.Error, StoreError):
            self._close_listener()
            time.sleep(max(0.0, deadline - time.monotonic()))

    def _close_listener(self) -> None:
        if self._listener is not None:
            with suppress(psycopg.Error):
                self._listener.close()
            self._listener = None

    def close(self) -> None:
        self._close_listener()
        self.db.close()

    def _write_cache(self, version: str, files: dict[str, bytes], sums: dict[str, str]) -> None:
        for name, content in files.items():
            if _sha256(content) != sums.get(name):
                raise StoreError(f"version {version}: {name} in {self.db.where} does not match its checksum")
        versions = self.ensure().root / VERSIONS_DIR
        tmp = Path(tempfile.mkdtemp(prefix=f".fetch-{version}-", dir=versions))
        try:
            for name, content in files.items():
                with open(tmp / name, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o755)
            local = versions / version
            if local.exists() and not _matches(local, sums):
                _remove_dir(local)  # damaged: replaced, never trusted
            try:
                os.rename(tmp, local)
            except OSError:  # another worker of this replica cached it meanwhile
                if not _matches(local, sums):
                    raise
            fsync_dir(versions)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _matches(folder: Path, sums: dict[str, str]) -> bool:
    """Does `folder` hold exactly the files `sums` names, with those checksums?"""
    try:
        present = {p.name for p in folder.iterdir()}
        return present == set(sums) and all(_sha256((folder / n).read_bytes()) == s for n, s in sums.items())
    except OSError:
        return False


def _remove_dir(path: Path) -> None:
    """Remove a cached copy: renamed away first, so readers never see it half deleted."""
    if not path.exists():
        return
    trash = path.with_name(f".stale-{path.name}-{uuid.uuid4().hex[:6]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
