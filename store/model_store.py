"""The model store: every trained version, its training data, and which one is active.

One interface, two backends, chosen by `open_store`:

- `DirectoryStore` (store/directory.py): a local directory, the default; nothing to install.
- `PostgresStore` (store/postgres.py): PostgreSQL holds the versions and the pointer, for many
  replicas; the directory is then only this replica's cache of the artifacts it has loaded.

Each version is a directory of files (the artifact, its training data, its report), immutable
once written. `path(version)` gives a local directory holding it, whatever the backend; the
active-version pointer changes only through `activate` and `rollback`, each atomic.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import json
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from model.artifact import ArtifactError, ModelMeta, load, save
from model.runtime import HasWeights

DATA_FILE = "data.jsonl"
VALID_FILE = "valid.jsonl"
REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.png"
VERSIONS_DIR = "versions"
HISTORY_LIMIT = 50
# Names the PostgreSQL database of a store; a job process finds its store through it too.
DATABASE_URL_ENV = "INTENTLY_DATABASE_URL"
SAFE_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class StoreError(ValueError):
    """A store operation that cannot be done; the message says why."""


class VersionNotFound(StoreError):
    pass


class StoreUnavailable(StoreError):
    """The store's database cannot be reached or is locked; retrying later may succeed."""


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


@dataclass(frozen=True)
class Pointer:
    """The active version and those active before it, newest first."""

    version: str | None = None
    history: tuple[str, ...] = field(default=())

    def activated(self, version: str) -> Pointer:
        earlier = [v for v in (self.version, *self.history) if v and v != version]
        return Pointer(version, tuple(earlier[:HISTORY_LIMIT]))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "history": list(self.history)}


def check_version_id(version: str) -> str:
    """Version ids become directory names: letters, digits, '.', '_', '-' only, no '..'."""
    if not isinstance(version, str) or not SAFE_VERSION.match(version) or ".." in version:
        raise StoreError(f"invalid version id {str(version)[:80]!r}")
    return version


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    """JSON Lines, UTF-8: how the store keeps examples."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def read_jsonl(content: str | bytes) -> builtins.list[dict[str, Any]]:
    text = content.decode("utf-8") if isinstance(content, bytes) else content
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class ModelStore(ABC):
    """What serving, training jobs and the `models` commands need of a store."""

    root: Path  # a local directory: the store itself, or this replica's cache of it

    # --- what a backend provides -----------------------------------------

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages (never a password)."""

    @abstractmethod
    def path(self, version: str) -> Path:
        """A local directory holding `version`'s files (it may not exist if the version does not)."""

    @abstractmethod
    def exists(self, version: str) -> bool: ...

    @abstractmethod
    def list_ids(self) -> builtins.list[str]: ...

    @abstractmethod
    def meta(self, version: str) -> ModelMeta: ...

    @abstractmethod
    def pointer(self) -> Pointer: ...

    @abstractmethod
    def _change_pointer(self, change: Callable[[Pointer], Pointer | None]) -> None:
        """Read the pointer and write `change(pointer)` (None: no change) as one atomic step."""

    @abstractmethod
    def _put(self, version: str, staged: Path) -> None:
        """Add the files of `staged` as `version`, whole or not at all; StoreError if it exists."""

    @abstractmethod
    def delete(self, version: str) -> None:
        """Delete a version and its data; the active version cannot be deleted."""

    @abstractmethod
    @contextmanager
    def first_start(self) -> Iterator[None]:
        """Held by whoever fills an empty store, so that replicas starting together do it once."""

    def wait_for_change(self, timeout: float) -> None:
        """Return when the active version may have changed, at the latest after `timeout` seconds."""
        time.sleep(timeout)

    def child_env(self) -> dict[str, str]:
        """Environment a job process needs to open this same store with `open_store`."""
        return {}

    def close(self) -> None:  # noqa: B027 - nothing to release for most backends
        """Release connections; the store must not be used afterwards."""

    # --- shared by both backends ---------------------------------------------

    def ensure(self) -> ModelStore:
        (self.root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        return self

    def active(self) -> str | None:
        version = self.pointer().version
        return check_version_id(version) if version else None

    def active_path(self) -> Path | None:
        version = self.active()
        return self.path(version) if version else None

    def info(self, version: str, active: str | None = None) -> VersionInfo:
        meta = self.meta(version)
        return VersionInfo(
            version=version,
            created_at=meta.created_at,
            active=version == (active if active is not None else self.active()),
            metrics=meta.metrics,
            examples=int(meta.data.get("examples", 0)),
            intents=len([x for x in meta.labels if x != meta.oos_label]),
            arch=meta.model.arch,
        )

    def list(self) -> builtins.list[VersionInfo]:
        active = self.active() or ""
        out = []
        for version in self.list_ids():
            try:
                out.append(self.info(version, active))
            except (ArtifactError, VersionNotFound):
                continue  # damaged or deleted meanwhile: not offered; activation would refuse it anyway
        return out

    def read_data(self, version: str, held_out: bool = False) -> builtins.list[dict[str, Any]]:
        """The exact examples a version was trained on, or (held_out) those it never saw."""
        if not self.exists(version):
            raise VersionNotFound(f"no version {version!r} in the store")
        path = self.path(version) / (VALID_FILE if held_out else DATA_FILE)
        if not path.is_file():
            if held_out:
                return []
            raise StoreError(f"version {version} has no stored training data")
        return read_jsonl(path.read_bytes())

    def add(
        self,
        net: HasWeights,
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
        files = {DATA_FILE: jsonl(e.to_json() for e in examples)}
        if valid_examples:
            files[VALID_FILE] = jsonl(e.to_json() for e in valid_examples)
        for name in extra_files or {}:
            if name in files or "/" in name or name.startswith("."):
                raise StoreError(f"extra file name {name!r} is not allowed")
        files.update(extra_files or {})
        if self.exists(version):
            raise StoreError(f"version {version} already exists")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.ensure().root / VERSIONS_DIR))
        try:
            staged = save(net, meta, staging / version, extra_files=files)
            self._put(version, staged)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version

    def activate(self, version: str) -> None:
        """Point the store at `version` after checking it loads; a corrupt one is refused."""
        check_version_id(version)
        # Loaded before the pointer is locked: a load takes a second; under the lock only whether
        # the version still exists (a delete may have come in between) is asked again.
        self._check_loads(version)

        def change(current: Pointer) -> Pointer | None:
            if not self.exists(version):
                raise VersionNotFound(f"no version {version!r} in the store")
            return None if current.version == version else current.activated(version)

        self._change_pointer(change)

    def rollback(self) -> str:
        """Re-activate the previously active version that still exists and loads."""
        chosen: list[str] = []

        def change(current: Pointer) -> Pointer | None:
            for i, version in enumerate(current.history):
                try:
                    self._check_loads(version)
                except StoreError:
                    continue
                chosen.append(version)
                rest = current.history[i + 1 :]
                history = (current.version, *rest) if current.version else rest
                return Pointer(version, history[:HISTORY_LIMIT])
            raise StoreError("there is no earlier version to roll back to")

        self._change_pointer(change)
        return chosen[0]

    def copy_in(self, version: str, folder: Path) -> bool:
        """Add the files of another store's `version` unchanged; False if it is here already."""
        check_version_id(version)
        if self.exists(version):
            return False
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.ensure().root / VERSIONS_DIR))
        try:
            shutil.copytree(folder, staging / version)
            self._put(version, staging / version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def remove_partial(self, older_than: float = 600.0) -> builtins.list[str]:
        """Delete what a crash left half-written (dot-named temporaries), once surely abandoned."""
        removed: builtins.list[str] = []
        versions = self.root / VERSIONS_DIR
        if not versions.is_dir():
            return removed
        now = time.time()
        for p in versions.iterdir():
            if p.name.startswith(".") and now - p.stat().st_mtime > older_than:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    def _check_loads(self, version: str) -> None:
        if not self.exists(version):
            raise VersionNotFound(f"no version {version!r} in the store")
        try:
            load(self.path(version))
        except ArtifactError as exc:
            raise StoreError(f"version {version} is damaged and was not activated: {exc}") from None


def migrate(source: ModelStore, target: ModelStore) -> builtins.list[str]:
    """Copy every version of `source` that `target` lacks, then its pointer and history; returns
    the versions copied. Running it again copies nothing and sets the same pointer."""
    copied = [v for v in source.list_ids() if source.exists(v) and target.copy_in(v, source.path(v))]
    pointer = source.pointer()
    if pointer.version is not None:
        target._check_loads(pointer.version)
        kept = tuple(v for v in pointer.history if target.exists(v))
        target._change_pointer(lambda _: Pointer(pointer.version, kept))
    return copied


def open_store(root: str | Path, database_url: str | None = None) -> ModelStore:
    """The store a deployment names: PostgreSQL when given a database URL (`root` is then the
    local cache of artifacts), else the directory `root` itself."""
    if database_url:
        from store.postgres import PostgresStore  # imported here: it imports this module

        return PostgresStore(database_url, root)
    from store.directory import DirectoryStore

    return DirectoryStore(root)
