"""What the test processes share when pytest-xdist runs the suite on several (`make check`, `make test`).

Each xdist worker is a process of its own, with its own session fixtures. The small models the
tests share are trained once per run all the same: the first worker to need one trains it, under
a file lock in the run's shared temporary directory, and the others load what it left there. In a
single-process run (`-p no:xdist`, `-n 0`) nothing is written: a fixture's value is simply made.

Imported by tests/conftest.py before anything imports torch, to set torch's threads (below).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from filelock import FileLock

from training import threads

T = TypeVar("T")


def worker_id() -> str | None:
    """This process's xdist worker (`gw0`, `gw1`, ...), or None in a single-process run."""
    return os.environ.get("PYTEST_XDIST_WORKER")


# torch's default is a thread a core, spinning while it waits: two workers training at once on two
# cores then take several times as long as one after the other (training/threads.py, issue 29). A
# worker takes one sleeping thread; a single-process run, the cores other work leaves free.
threads.configure(1 if worker_id() else None)


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The temporary directory every worker of this run shares (the workers' basetemps are in
    it), or None in a single-process run."""
    if worker_id() is None:
        return None
    return tmp_path_factory.getbasetemp().parent


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[], T]) -> T:
    """`make()`, made once per run: under xdist by the first worker to ask, the others unpickling it."""
    root = _shared_root(tmp_path_factory)
    if root is None:
        return make()
    path = root / f"{name}.pickle"
    with FileLock(f"{path}.lock"):
        if path.is_file():
            value: T = pickle.loads(path.read_bytes())  # written by this run's own workers
            return value
        value = make()
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(value))
        partial.replace(path)
        return value


def directory_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, fill: Callable[[Path], None]
) -> Path:
    """A directory `fill` makes (it is given the path, not yet there) once per run, for every
    worker to read and none to change."""
    root = _shared_root(tmp_path_factory)
    if root is None:
        path = tmp_path_factory.mktemp(name) / name
        fill(path)
        return path
    path, done = root / name, root / f"{name}.done"
    with FileLock(f"{path}.lock"):
        if not done.is_file():
            shutil.rmtree(path, ignore_errors=True)  # a worker that died half-way
            fill(path)
            done.touch()
    return path


# --- groups: the tests that must share a worker (tests/conftest.py says which) -----------------
# `--dist loadgroup` hands each group to one worker as a whole. xdist 3.8 learns a test's group from
# a suffix it writes into the test's id, which pytest 9 no longer lets it change; so the workers
# write the groups to a file of the run's, and the controller's scheduler (`group_scheduler`) reads
# them from there.
GROUPS_FILE = "xdist-groups.json"


def write_groups(config: pytest.Config, groups: dict[str, str]) -> None:
    """In a worker, after collection: each test's group by its id (every worker writes the same)."""
    path = config._tmp_path_factory.getbasetemp().parent / GROUPS_FILE  # type: ignore[attr-defined]
    partial = path.with_name(f"{GROUPS_FILE}.{worker_id()}")
    partial.write_text(json.dumps(groups), encoding="utf-8")
    partial.replace(path)


def group_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's load-group scheduling, with the groups from the workers' file."""
    from xdist.scheduler import LoadScopeScheduling

    path = config._tmp_path_factory.getbasetemp() / GROUPS_FILE  # type: ignore[attr-defined]

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            # First called once every worker has collected, and so has written the file.
            if self.groups is None:
                self.groups = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


@contextlib.contextmanager
def taking_turns(tmp_path_factory: pytest.TempPathFactory, alone: bool) -> Iterator[None]:
    """Under xdist, a test that must run `alone` waits for the other workers' tests to end and
    keeps them from starting until it has finished; the others run side by side as usual."""
    root = _shared_root(tmp_path_factory)
    if root is None:
        yield
        return
    # Who waits to run alone holds the turnstile, so that other tests cannot keep starting past it.
    with open(root / "alone.turnstile", "a") as turnstile, open(root / "alone.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    # Closing the files let go of both locks.
