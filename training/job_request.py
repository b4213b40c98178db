"""What training accepts of a queued job: its options checked before the store queues it.

Torch-free, so the service can check a request before it answers.
"""

from __future__ import annotations

from typing import Any

from store.jobs import JobError, JobRequest, JobStore
from training.config import TrainConfig


def job_config(request: JobRequest) -> TrainConfig:
    """The training options of `request`, or JobError saying what is wrong with it."""
    request.check()
    try:
        config = TrainConfig.from_options(dict(request.options or {}))
    except ValueError as exc:
        raise JobError(f"options: {exc}") from None
    # A job is an HTTP request: it must not name files on the server or models to download.
    for name in ("vectors", "encoder", "teacher"):
        if getattr(config, name) not in ("auto", ""):
            raise JobError(f"options: {name} must be 'auto' or '' in a training job")
    if config.transfer:
        raise JobError("options: transfer names a file, which a training job may not do")
    return config


def submit(jobs: JobStore, request: JobRequest) -> dict[str, Any]:
    """Check `request` and queue it; its public record."""
    return jobs.submit(request, job_config(request).epochs)
