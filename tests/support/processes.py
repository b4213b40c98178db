"""The processes of a running server: which of them serve a port, and their resident memory."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import psutil

MB = 1024 * 1024


def _listens_on(proc: psutil.Process, port: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in proc.net_connections(kind="inet")
        )
    return False


def worker_pids(root_pid: int, port: int) -> list[int]:
    """The processes under `root_pid` that accept requests on `port`, in pid order.

    With 1 worker uvicorn serves in the process we started; with more, the
    supervisor holds the socket too but serves nothing, so it is dropped when
    any of its descendants hold the socket as well. Empty while nothing listens.
    """
    try:
        root = psutil.Process(root_pid)
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = sorted(p.pid for p in children if _listens_on(p, port))
    return workers or ([root_pid] if _listens_on(root, port) else [])


def rss_mb(pid: int) -> float:
    """Resident memory of one process in MiB."""
    return psutil.Process(pid).memory_info().rss / MB


def total_rss_mb(pids: Sequence[int]) -> float:
    """Summed resident memory of `pids` in MiB; a process that is gone counts 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += rss_mb(pid)
    return total
