"""Micro-batching: concurrent classify requests share one forward pass.

While a forward pass runs, new requests queue up; when it ends, everything
queued (up to `max_size` texts) goes into the next pass. A lone request runs
at once: it only waits (at most `max_wait`) when others are already queued
with it, so company is likely. Forward passes run in a worker thread, never
on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from model.predictor import Prediction, Predictor

log = logging.getLogger("intently.batcher")


@dataclass
class _Job:
    predictor: Predictor  # the model the request was admitted with
    texts: Sequence[str]
    top_k: int
    future: asyncio.Future[list[Prediction]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def _run(predictor: Predictor, jobs: list[_Job]) -> list[list[Prediction]]:
    texts = [t for job in jobs for t in job.texts]
    top_k = max(job.top_k for job in jobs)
    predictions = predictor.predict_batch(texts, top_k=top_k)
    out, start = [], 0
    for job in jobs:
        chunk = predictions[start : start + len(job.texts)]
        start += len(job.texts)
        out.append(
            [p if len(p.ranking) <= job.top_k else replace(p, ranking=p.ranking[: job.top_k]) for p in chunk]
        )
    return out


class Batcher:
    def __init__(self, max_size: int = 64, max_wait_ms: float = 2.0):
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.on_batch: list[Callable[[int], None]] = []  # callbacks(batch_size)

    @property
    def enabled(self) -> bool:
        return self.max_size > 1

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop(), name="intently-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def classify(self, predictor: Predictor, texts: Sequence[str], top_k: int) -> list[Prediction]:
        if not self.enabled or len(texts) >= self.max_size or self._queue is None:
            self._notify(len(texts))
            return await asyncio.to_thread(predictor.predict_batch, texts, top_k)
        if not self._lock.locked() and self._queue.empty():
            # Nothing running, nothing waiting: no company is coming, skip the queue.
            async with self._lock:
                self._notify(len(texts))
                return await asyncio.to_thread(predictor.predict_batch, texts, top_k)
        job = _Job(predictor, texts, top_k)
        await self._queue.put(job)
        return await job.future

    def _notify(self, size: int) -> None:
        for callback in self.on_batch:
            callback(size)

    async def _collect(self, first: _Job) -> list[_Job]:
        assert self._queue is not None
        jobs = [first]
        size = len(jobs[0].texts)
        deadline = time.monotonic() + self.max_wait
        while size < self.max_size:
            if self._queue.empty():
                # Others queued with the first: more are likely on their way.
                if len(jobs) == 1 or self.max_wait <= 0:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.texts)
        return jobs

    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            first = await self._queue.get()
            async with self._lock:  # one forward pass at a time: they share the cores
                await self._run_jobs(await self._collect(first))

    async def _run_jobs(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.cancelled()]
        # Jobs are grouped by the predictor they were admitted with, so a
        # request finishes on the model it started with even across a swap.
        groups: dict[int, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(id(job.predictor), []).append(job)
        for group in groups.values():
            predictor = group[0].predictor
            self._notify(sum(len(j.texts) for j in group))
            try:
                results = await asyncio.to_thread(_run, predictor, group)
            except Exception as exc:  # one failed pass fails its jobs, not the loop
                log.exception("forward pass failed")
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(group, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
