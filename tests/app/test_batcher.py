from __future__ import annotations

import asyncio
import time

from app.batcher import Batcher
from model.predictor import Predictor

TEXTS = ["What time is it?", "play some jazz", "turn the lights off", "how do I bake bread?", "hello"] * 6


def test_concurrent_requests_share_passes_and_get_their_own_answers(small_predictor: Predictor) -> None:
    sizes: list[int] = []

    async def run() -> list:
        batcher = Batcher(max_size=16, max_wait_ms=5)
        batcher.on_batch.append(sizes.append)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.classify(small_predictor, [t], 2) for t in TEXTS))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    expected = small_predictor.predict_batch(TEXTS, top_k=2)
    assert [r[0].intent for r in results] == [e.intent for e in expected]
    assert all(len(r[0].ranking) == 2 for r in results)
    assert sum(sizes) == len(TEXTS) and max(sizes) > 1 and max(sizes) <= 16


def _passes(batcher: Batcher) -> list[tuple[int, str]]:
    """Each forward pass: its size, and the task that ran it ("intently-batcher" for the queue's)."""
    passes: list[tuple[int, str]] = []

    def record(size: int) -> None:
        task = asyncio.current_task()
        passes.append((size, task.get_name() if task else ""))

    batcher.on_batch.append(record)
    return passes


def _lone_request(
    predictor: Predictor, text: str, behind_a_pass: bool
) -> tuple[list[tuple[int, str]], float]:
    """Classify `text` alone, with max_wait far longer than a pass: either with nothing running,
    or queued behind a running pass (the batcher's lock held, then let go). Returns the passes and
    how long the request took from the moment it could run."""
    wait = 5.0

    async def run() -> tuple[list[tuple[int, str]], float]:
        batcher = Batcher(max_size=16, max_wait_ms=wait * 1000)
        passes = _passes(batcher)
        batcher.start()
        try:
            if behind_a_pass:
                async with batcher._lock:  # a forward pass is running
                    request = asyncio.create_task(batcher.classify(predictor, [text], 2))
                    await asyncio.sleep(0.05)
                    assert not request.done()
                    started = time.monotonic()
            else:
                started = time.monotonic()
                request = asyncio.create_task(batcher.classify(predictor, [text], 2))
            (p,) = await request
            assert p.intent == predictor.predict(text).intent
            return passes, time.monotonic() - started
        finally:
            await batcher.stop()

    passes, took = asyncio.run(run())
    assert took < wait / 2, f"a lone request waited {took:.2f} s for company"
    return passes, took


def test_a_lone_request_runs_at_once(small_predictor: Predictor) -> None:
    """Nothing running, nothing queued: the request skips the queue and never waits for company."""
    passes, _ = _lone_request(small_predictor, "What time is it?", behind_a_pass=False)
    assert len(passes) == 1 and passes[0][0] == 1
    assert passes[0][1] != "intently-batcher", "a lone request went through the queue"


def test_a_lone_queued_request_does_not_wait_for_company(small_predictor: Predictor) -> None:
    """A request queued behind a running pass goes in the next pass as soon as that one ends: alone
    in the queue, it has no company to wait for."""
    passes, _ = _lone_request(small_predictor, "play some jazz", behind_a_pass=True)
    assert passes == [(1, "intently-batcher")]
