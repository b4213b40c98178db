"""Runs queued training jobs of the store, one at a time, each in a child process.

The one home of the claim-and-run loop, for both kinds of trainer: `intently worker` (a process
that only trains) and every worker of `intently serve` where the `train` extra (torch) is
installed. A server without torch runs no dispatcher and leaves its jobs to a trainer. Every
dispatcher says it is alive in the job store (`trainer_beat`), so that a job queued where no
trainer is alive says so in its record. The job store's claim (one transaction, in SQLite or
PostgreSQL) makes sure only one job runs at a time. Torch-free itself: the job runs in
`python -m training.jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from store.jobs import TRAINER_BEAT_SECONDS, open_job_store, trainer_id
from store.model_store import ModelStore

log = logging.getLogger("intently.jobs")


class JobDispatcher:
    """`kind`: what this trainer is, as its heartbeat row says ("serve" or "worker")."""

    def __init__(self, store: ModelStore, interval: float = 1.0, kind: str = "serve"):
        self.store = store
        self.jobs = open_job_store(store)
        self.interval = interval
        self.kind = kind
        self.trainer = trainer_id()
        self._task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._running: str | None = None
        self._claim: asyncio.Future[str | None] | None = None

    def start(self) -> None:
        self._beat_task = asyncio.create_task(self._beat(), name="intently-trainer-heartbeat")
        self._task = asyncio.create_task(self._loop(), name="intently-jobs")

    async def run_until(self, stop: asyncio.Event) -> None:
        """Claim and run jobs until `stop` is set (`intently worker`), then stop as a server does."""
        self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        running = self._running  # read first: cancelling `_run` clears it
        for task in (self._task, self._beat_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._proc.wait(), 10)
        # A claim cancelled mid-way has still taken its job, which no process will run.
        claimed = None
        if self._claim is not None:
            with contextlib.suppress(Exception):
                claimed = await self._claim
        reason = f"{'trainer' if self.kind == 'worker' else 'server'} shut down during training"
        # Also when the job's process is already gone: a signal to the whole process group reaches
        # it first, and `_run`, cancelled above, no longer records its exit.
        for job_id in {j for j in (running, claimed) if j is not None}:
            await asyncio.to_thread(self.jobs.fail_if_running, job_id, reason)
        if self._beat_task is not None:
            with contextlib.suppress(Exception):  # a store that is gone: the beats simply stop
                await asyncio.to_thread(self.jobs.trainer_beat, self.trainer, self.kind, True)

    async def _beat(self) -> None:
        """Say this trainer is alive, also while a job runs (the loop waits on it meanwhile)."""
        while True:
            try:
                await asyncio.to_thread(self.jobs.trainer_beat, self.trainer, self.kind)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("trainer heartbeat failed; retrying", exc_info=True)
            await asyncio.sleep(TRAINER_BEAT_SECONDS)

    async def _loop(self) -> None:
        await asyncio.to_thread(self.store.remove_partial)
        while True:
            try:
                for reaped in await asyncio.to_thread(self.jobs.reap):
                    log.warning("training job marked failed: its process is gone", extra={"job_id": reaped})
                # Shielded: cancelled while the store claims, the claim still ends and `stop` sees it.
                self._claim = asyncio.ensure_future(asyncio.to_thread(self.jobs.claim_next))
                job_id = await asyncio.shield(self._claim)
                if job_id:
                    await self._run(job_id)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job dispatcher check failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _run(self, job_id: str) -> None:
        log.info("training job started", extra={"job_id": job_id})
        out = open(self.jobs.log_path(job_id), "ab")  # noqa: SIM115 - closed below
        try:
            self._running = job_id
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "training.jobs",
                str(self.store.root),
                job_id,
                stdout=out,
                stderr=out,
                env={**os.environ, **self.store.child_env()},
            )
            code = await self._proc.wait()
        finally:
            out.close()
            self._running = None
        if code != 0:
            await asyncio.to_thread(
                self.jobs.fail_if_running, job_id, f"training process exited with code {code}"
            )
        record = await asyncio.to_thread(self.jobs.get, job_id)
        log.info("training job %s", record["state"], extra={"job_id": job_id, "version": record["version"]})
