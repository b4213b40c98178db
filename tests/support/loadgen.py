"""A closed-loop HTTP load generator in plain asyncio: the tests' own, and bench/'s where wrk is absent.

Each of `concurrency` keep-alive connections sends a POST /v1/classify, reads
the whole answer, and sends the next, until the time is up. Raw sockets
rather than an HTTP client library: on two shared cores the generator must
cost far less than the server it measures, and the tests need nothing
outside the project's own dependencies. Its figures can be read while it
runs (`out`), which a fault test needs and wrk cannot give.

Every answer counts: a status other than 200, a malformed or truncated
response, a reset connection or a request slower than `timeout` is an
error, with its kind. Every 50th body is parsed and checked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PATH = "/v1/classify"
ASSISTANT_TEST = Path(__file__).resolve().parents[2] / "data" / "assistant" / "test.csv"
DEFAULT_TEXT = "What time is it?"
# What a broken answer or connection raises; anything else is a bug of the generator itself.
_FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError)


@dataclass
class LoadResult:
    """Everything one run measured; latencies in seconds, one per answered request."""

    seconds: float = 0.0
    concurrency: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    checked: int = 0  # bodies parsed and checked
    stop: bool = False  # set from outside to end the run early

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile_ms(self, pct: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": len(self.latencies),
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "rps": round(len(self.latencies) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(self.percentile_ms(50), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "max_ms": round(max(self.latencies) * 1000, 2) if self.latencies else float("nan"),
            "bodies_checked": self.checked,
        }


def build_requests(host: str, port: int, texts: Sequence[str]) -> list[bytes]:
    """Pre-formatted HTTP/1.1 requests, one per text, so the hot loop only writes bytes."""
    out = []
    for text in texts:
        body = json.dumps({"text": text, "top_k": 3}).encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = None, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    if length is None:
        raise ValueError("answer without Content-Length")
    return status, await reader.readexactly(length), close


def _check_body(body: bytes) -> None:
    answer = json.loads(body)
    if not isinstance(answer.get("ranking"), list) or not answer.get("model_version"):
        raise ValueError("answer is not shaped like a classification")


async def _connection(
    host: str, port: int, requests: list[bytes], offset: int, deadline: float, timeout: float, out: LoadResult
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    i = offset
    while time.monotonic() < deadline and not out.stop:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            assert reader is not None
            started = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, body, close = await asyncio.wait_for(_read_response(reader), timeout)
            elapsed = time.perf_counter() - started
            i += 1
            if status != 200:
                out.errors[f"status {status}"] += 1
            else:
                if i % 50 == 0:
                    _check_body(body)
                    out.checked += 1
                out.latencies.append(elapsed)
            if close:
                writer.close()
                writer = None
        except _FAILURES as exc:
            out.errors[type(exc).__name__] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)  # a refused connect must not spin
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def run_load(
    url: str,
    texts: Sequence[str],
    concurrency: int,
    seconds: float,
    timeout: float = 10.0,
    on_tick: Callable[[float], None] | None = None,
    tick: float = 1.0,
    out: LoadResult | None = None,
) -> LoadResult:
    """Hold `concurrency` requests in flight for `seconds`; `on_tick(elapsed)` runs every `tick` s.

    Pass `out` to watch the figures grow from another thread while it runs.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = build_requests(host, port, texts)
    out = out or LoadResult()
    out.concurrency = concurrency
    started = time.monotonic()
    deadline = started + seconds
    tasks = [
        asyncio.create_task(_connection(host, port, requests, n, deadline, timeout, out))
        for n in range(concurrency)
    ]
    if on_tick is not None:
        while time.monotonic() < deadline and not out.stop:
            await asyncio.sleep(min(tick, max(0.0, deadline - time.monotonic())))
            on_tick(time.monotonic() - started)
    await asyncio.gather(*tasks)
    out.seconds = time.monotonic() - started
    return out


def utterances(limit: int = 8) -> list[str]:
    """A few real test utterances of different intents, so requests are not all one string."""
    picked: dict[str, str] = {}
    with contextlib.suppress(OSError), open(ASSISTANT_TEST, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text, intent = (row.get("text") or "").strip(), row.get("intent") or ""
            if text and intent not in picked:
                picked[intent] = text
            if len(picked) >= limit:
                break
    return list(picked.values()) or [DEFAULT_TEXT]
