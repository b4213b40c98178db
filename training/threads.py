"""How many threads training takes: its share of the cores, not one a core whatever the load.

torch's default is one intra-op thread a core, and OpenMP's threads spin while they wait for
each other; on a machine whose cores are busy, a minute of training then takes ten (issue 29,
docs/BENCHMARKS.md "Training on a busy machine").
"""

from __future__ import annotations

import math
import os
import time

THREADS_ENV = "INTENTLY_TRAIN_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container's cpuset sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _running_now() -> int:
    """Other processes' threads running or ready to run now (Linux), from a few looks at the kernel's count.

    The load average lags a minute behind work that has just started; this does not.
    """
    counts = []
    for _ in range(5):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)  # less this thread
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(0.01)
    return sorted(counts)[len(counts) // 2]


def free_cores() -> int:
    """The usable cores that other work leaves free, by the last minute's load and by now; at least one."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        load = 0.0
    busy = max(math.floor(load + 0.5), _running_now())
    return max(1, min(cores, cores - busy))


def choose(requested: int | None = None) -> int:
    """`requested`, else $INTENTLY_TRAIN_THREADS, else the free cores."""
    if requested:
        return requested
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a whole number, not {text!r}") from None
        if value < 1:
            raise ValueError(f"{THREADS_ENV} must be at least 1, not {value}")
        return value
    return free_cores()


def configure(requested: int | None = None) -> int:
    """Give torch `choose(requested)` threads that sleep, not spin, while they wait; returns the count.

    The wait policy is read once, when torch's OpenMP starts: call this before anything imports
    torch (an OMP_WAIT_POLICY already in the environment is kept).
    """
    threads = choose(requested)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)
    return threads
