from __future__ import annotations

import asyncio

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


def test_a_lone_request_runs_at_once(small_predictor: Predictor) -> None:
    sizes: list[int] = []

    async def run() -> None:
        batcher = Batcher(max_size=16, max_wait_ms=50)
        batcher.on_batch.append(sizes.append)
        batcher.start()
        try:
            (p,) = await batcher.classify(small_predictor, ["What time is it?"], 3)
            assert p.intent == "ask_time"
        finally:
            await batcher.stop()

    asyncio.run(run())
    assert sizes == [1]
