"""A real, size-limited file system for disk-full tests: a tmpfs mounted on a test's directory.

Mounting needs root (or CAP_SYS_ADMIN); where the machine refuses, the test is skipped and says
why. CI's container may refuse it too, so this is a skip there as well, never a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE = 4096


@contextmanager
def small_disk(where: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes (rounded up to whole pages) mounted at `where`, unmounted after."""
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("a size-limited tmpfs needs root and mount(8); the disk-full tests with a real disk skip")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={pages(size) * PAGE},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount ({done.stderr.strip() or done.returncode})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=False)


def resize(where: Path, size: int) -> None:
    """Give the mounted disk room again (or take it away)."""
    subprocess.run(["mount", "-o", f"remount,size={pages(size) * PAGE}", str(where)], check=True)


def used(where: Path) -> int:
    stat = os.statvfs(where)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def pages(size: int) -> int:
    return -(-size // PAGE)


def fill(where: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to make room again)."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * PAGE)
        except OSError:
            pass
    return filler
