"""Classify traffic from threads against several replicas, every answer and failure counted.

Used where a test or a benchmark must see that no request fails while something else
happens (activations, a database restart): each thread keeps one connection and turns
to the next replica with every request.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

from tests.support.loadgen import utterances


class Traffic:
    """`threads` threads classifying on keep-alive connections, each turn to the next replica."""

    def __init__(self, urls: Sequence[str], threads: int = 8):
        self.urls = list(urls)
        self.texts = utterances()
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.seconds = 0.0

    def _run(self, index: int) -> None:
        with httpx.Client(timeout=10) as http:
            i = index
            while not self._stop.is_set():
                i += 1
                version, failure = None, None
                try:
                    text = self.texts[i % len(self.texts)]
                    r = http.post(f"{self.urls[i % len(self.urls)]}/v1/classify", json={"text": text})
                    if r.status_code == 200:
                        version = str(r.json()["model_version"])
                    else:
                        failure = f"status {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if version is not None:
                        self.ok += 1
                        self.versions[version] += 1
                    else:
                        self.failures[failure or "?"] += 1

    def __enter__(self) -> Traffic:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self.seconds = time.monotonic() - self._started

    def result(self) -> dict[str, Any]:
        total = self.ok + sum(self.failures.values())
        return {
            "requests": total,
            "failures": sum(self.failures.values()),
            "failure_kinds": dict(self.failures.most_common(10)),
            "rps": total / self.seconds if self.seconds else 0.0,
            "seconds": self.seconds,
            "versions_served": dict(self.versions),
        }
