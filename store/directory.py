"""The default store backend: one local directory, nothing to install.

    versions/<version>/weights.safetensors, model.json, data.jsonl, valid.jsonl,
                       report.json, confusion.png   (evaluation on valid.jsonl)
    active.json            {"version": ..., "history": [previously active, newest first]}
    .lock                  serialises writers across processes

Writers take the lock; the pointer is replaced atomically (write, fsync,
rename), so readers in any process see either the old or the new version,
never a half-written one. Readers (serving workers) need no lock.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from model.artifact import ModelMeta, fsync_dir, read_meta
from store.model_store import (
    SAFE_VERSION,
    VERSIONS_DIR,
    ModelStore,
    Pointer,
    StoreError,
    VersionNotFound,
    check_version_id,
)

ACTIVE_FILE = "active.json"


class DirectoryStore(ModelStore):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS_DIR

    def describe(self) -> str:
        return str(self.root)

    @contextmanager
    def lock(self, name: str = ".lock") -> Iterator[None]:
        self.ensure()
        with open(self.root / name, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextmanager
    def first_start(self) -> Iterator[None]:
        with self.lock(".init.lock"):
            yield

    def path(self, version: str) -> Path:
        return self.versions_dir / check_version_id(version)

    def exists(self, version: str) -> bool:
        return (self.path(version) / "model.json").is_file()

    def list_ids(self) -> builtins.list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.versions_dir.iterdir()
            if SAFE_VERSION.match(p.name) and (p / "model.json").is_file()
        )

    def meta(self, version: str) -> ModelMeta:
        if not self.exists(version):
            raise VersionNotFound(f"no version {version!r} in the store")
        return read_meta(self.path(version))

    def pointer(self) -> Pointer:
        try:
            raw = json.loads((self.root / ACTIVE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Pointer()
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.root / ACTIVE_FILE} is unreadable: {exc}") from None
        if not isinstance(raw, dict):
            raise StoreError(f"{self.root / ACTIVE_FILE} is not a JSON object")
        version = raw.get("version")
        history = tuple(v for v in raw.get("history", []) if isinstance(v, str))
        return Pointer(version if isinstance(version, str) else None, history)

    def _change_pointer(self, change: Callable[[Pointer], Pointer | None]) -> None:
        with self.lock():
            new = change(self.pointer())
            if new is not None:
                self._write_pointer(new)

    def _put(self, version: str, staged: Path) -> None:
        with self.lock():
            if self.path(version).exists():
                raise StoreError(f"version {version} already exists")
            os.rename(staged, self.path(version))
            fsync_dir(self.versions_dir)

    def delete(self, version: str) -> None:
        with self.lock():
            if version == self.active():
                raise StoreError(f"version {version} is active and cannot be deleted")
            if not self.path(version).exists():
                raise VersionNotFound(f"no version {version!r} in the store")
            trash = self.versions_dir / f".deleting-{version}"
            os.rename(self.path(version), trash)  # disappears at once for readers
            shutil.rmtree(trash, ignore_errors=True)

    def _write_pointer(self, pointer: Pointer) -> None:
        tmp = self.root / f".{ACTIVE_FILE}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(pointer.to_json(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / ACTIVE_FILE)
        except BaseException:  # e.g. the disk is full: the old pointer stays, no temporary is left
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)
