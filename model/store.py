"""The model store: every trained version, its training data, and which one is active.

Layout of a store directory (on a cluster, a shared volume):

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
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model.artifact import ArtifactError, ModelMeta, fsync_dir, load, read_meta, save
from model.network import IntentNet

ACTIVE_FILE = "active.json"
DATA_FILE = "data.jsonl"
VALID_FILE = "valid.jsonl"
REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.png"
VERSIONS_DIR = "versions"
_SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HISTORY_LIMIT = 50


class StoreError(ValueError):
    """A store operation that cannot be done; the message says why."""


class VersionNotFound(StoreError):
    pass


class LabelledText(Protocol):
    # Read-only members, so that frozen dataclasses (training's Example) satisfy it.
    @property
    def text(self) -> str: ...
    @property
    def intent(self) -> str: ...

    def to_json(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str
    active: bool
    metrics: dict[str, Any]
    examples: int
    intents: int
    arch: str


def check_version_id(version: str) -> str:
    """Version ids become directory names: letters, digits, '.', '_', '-' only, no '..'."""
    if not isinstance(version, str) or not _SAFE_VERSION.match(version) or ".." in version:
        raise StoreError(f"invalid version id {str(version)[:80]!r}")
    return version


class ModelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS_DIR

    def ensure(self) -> ModelStore:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        return self

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.ensure()
        with open(self.root / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def path(self, version: str) -> Path:
        return self.versions_dir / check_version_id(version)

    def exists(self, version: str) -> bool:
        return (self.path(version) / "model.json").is_file()

    # --- reading -------------------------------------------------------

    def pointer(self) -> dict[str, Any]:
        try:
            raw = json.loads((self.root / ACTIVE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": None, "history": []}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.root / ACTIVE_FILE} is unreadable: {exc}") from None
        if not isinstance(raw, dict):
            raise StoreError(f"{self.root / ACTIVE_FILE} is not a JSON object")
        history = [v for v in raw.get("history", []) if isinstance(v, str)]
        return {"version": raw.get("version"), "history": history}

    def active(self) -> str | None:
        version = self.pointer()["version"]
        return check_version_id(version) if version else None

    def active_path(self) -> Path | None:
        version = self.active()
        return self.path(version) if version else None

    def list_ids(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self.versions_dir.iterdir()
            if _SAFE_VERSION.match(p.name) and (p / "model.json").is_file()
        )

    def info(self, version: str) -> VersionInfo:
        meta = self.meta(version)
        return VersionInfo(
            version=version,
            created_at=meta.created_at,
            active=version == self.active(),
            metrics=meta.metrics,
            examples=int(meta.data.get("examples", 0)),
            intents=len([x for x in meta.labels if x != meta.oos_label]),
            arch=meta.model.arch,
        )

    def list(self) -> list[VersionInfo]:
        out = []
        for version in self.list_ids():
            try:
                out.append(self.info(version))
            except (ArtifactError, StoreError):
                continue  # a damaged version is not offered; activation would refuse it anyway
        return out

    def meta(self, version: str) -> ModelMeta:
        if not self.exists(version):
            raise VersionNotFound(f"no version {version!r} in the store")
        return read_meta(self.path(version))

    def read_data(self, version: str, held_out: bool = False) -> builtins.list[dict[str, Any]]:
        """The exact examples a version was trained on, or (held_out) those it never saw."""
        path = self.path(version) / (VALID_FILE if held_out else DATA_FILE)
        if not path.is_file():
            if held_out:
                return []
            raise StoreError(f"version {version} has no stored training data")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # --- writing -------------------------------------------------------

    def add(
        self,
        net: IntentNet,
        meta: ModelMeta,
        examples: Sequence[LabelledText],
        valid_examples: Sequence[LabelledText] = (),
        extra_files: dict[str, bytes] | None = None,
    ) -> str:
        """Store a trained model with its data; the version appears whole or not at all.

        `examples` is everything it was trained on, `valid_examples` the part
        held out from training: later models are compared on those.
        `extra_files` (e.g. the evaluation report) land in the same atomic write.
        """
        version = check_version_id(meta.version)
        files = {DATA_FILE: _jsonl(examples)}
        if valid_examples:
            files[VALID_FILE] = _jsonl(valid_examples)
        for name in extra_files or {}:
            if name in files or "/" in name or name.startswith("."):
                raise StoreError(f"extra file name {name!r} is not allowed")
        files.update(extra_files or {})
        self.ensure()
        with self.lock():
            if self.path(version).exists():
                raise StoreError(f"version {version} already exists")
            save(net, meta, self.path(version), extra_files=files)
        return version

    def activate(self, version: str) -> None:
        """Point the store at `version` after checking it loads; a corrupt one is refused."""
        with self.lock():
            if not self.exists(version):
                raise VersionNotFound(f"no version {version!r} in the store")
            try:
                load(self.path(version))
            except ArtifactError as exc:
                raise StoreError(f"version {version} is damaged and was not activated: {exc}") from None
            current = self.pointer()
            if current["version"] == version:
                return
            history = [v for v in [current["version"], *current["history"]] if v and v != version]
            self._write_pointer({"version": version, "history": history[:HISTORY_LIMIT]})

    def rollback(self) -> str:
        """Re-activate the previously active version that still exists."""
        with self.lock():
            current = self.pointer()
            earlier: list[str] = current["history"]  # pointer() keeps only strings there
            for i, version in enumerate(earlier):
                if self.exists(version):
                    try:
                        load(self.path(version))
                    except ArtifactError:
                        continue
                    rest = earlier[i + 1 :]
                    history = [current["version"], *rest] if current["version"] else rest
                    self._write_pointer({"version": version, "history": history[:HISTORY_LIMIT]})
                    return version
        raise StoreError("there is no earlier version to roll back to")

    def delete(self, version: str) -> None:
        with self.lock():
            if version == self.active():
                raise StoreError(f"version {version} is active and cannot be deleted")
            if not self.path(version).exists():
                raise VersionNotFound(f"no version {version!r} in the store")
            trash = self.versions_dir / f".deleting-{version}"
            os.rename(self.path(version), trash)  # disappears at once for readers
            shutil.rmtree(trash, ignore_errors=True)

    def remove_partial(self, older_than: float = 600.0) -> builtins.list[str]:
        """Delete what a crash left half-written (dot-named temporaries), once surely abandoned."""
        removed: builtins.list[str] = []
        if not self.versions_dir.is_dir():
            return removed
        now = time.time()
        for p in self.versions_dir.iterdir():
            if p.name.startswith(".") and now - p.stat().st_mtime > older_than:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    def _write_pointer(self, pointer: dict[str, Any]) -> None:
        tmp = self.root / f".{ACTIVE_FILE}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(pointer, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / ACTIVE_FILE)
        except BaseException:  # e.g. the disk is full: the old pointer stays, no temporary is left
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)


def _jsonl(examples: Sequence[LabelledText]) -> bytes:
    lines = (json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples)
    return "".join(lines).encode("utf-8")
