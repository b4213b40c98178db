"""The peak memory of one piece of work, not of the whole process's life (Linux)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.M)
    assert match, f"no {field} in {_STATUS}"
    return int(match.group(1))


def peak_growth_mb(work: Callable[[], T]) -> tuple[T, float | None]:
    """`work()`'s result and how far the resident set rose above its start while it ran, in MB.

    ru_maxrss and VmHWM keep the highest mark of the process's whole life (a test session's,
    here); writing 5 to clear_refs resets VmHWM to the current size first. None where the
    kernel offers no such reset.
    """
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return work(), None
    before = _kib("VmRSS")
    result = work()
    return result, (_kib("VmHWM") - before) / 1024
