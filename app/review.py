"""The review inbox's capture: which answered requests are kept, and how they reach the store
without slowing a request down.

Which (docs/lifecycle.md, "The review inbox"): with the model's out-of-scope threshold t (the
calibrated probability under which it turns a request away; its probabilities are temperature-
scaled, so a confidence c means "right about c of the time"), the band it accepts is t..1, and a
request is kept

- `sample`: at random, INTENTLY_REVIEW_SAMPLE_RATE of all requests, drawn before anything else is
  looked at, so that the labelled sample estimates live accuracy without bias;
- `out_of_scope`: it was turned away;
- `ambiguous`: in scope, but the top two intents are closer than a quarter of the band,
  (1 - t) / 4;
- `low_confidence`: in scope, but the top intent's confidence is in the lower half of the band,
  under t + (1 - t) / 2.

How: the request path only decides and appends to a bounded in-process queue (a deque; about a
microsecond); a thread of each worker drains it every quarter of a second, merges repeats of a
text, and writes each batch in one transaction. A full queue or a store that cannot be written
drops items and counts them (intently_review_dropped_total); a request never waits for, or fails
because of, the inbox. No log line carries an utterance.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.metrics import REVIEW_DROPPED, REVIEW_KEPT, labelled
from model.predictor import Prediction
from store.model_store import StoreUnavailable
from store.review import ReviewStore, Sighting, text_key

log = logging.getLogger("intently.review")

LOW_SHARE = 0.5  # low_confidence: under the middle of the accepted band
MARGIN_SHARE = 0.25  # ambiguous: the top two closer than a quarter of the band
RANKED = 3  # the top intents kept with an item (the playground shows them)
BATCH = 1000  # most queued requests in one write
WARN_EVERY = 60.0  # seconds between two warnings that the store cannot be written


@dataclass(frozen=True)
class CaptureRule:
    """The thresholds of one model, from its out-of-scope threshold."""

    low: float  # an in-scope confidence under this is low_confidence
    margin: float  # top two closer than this are ambiguous

    @classmethod
    def for_threshold(cls, threshold: float) -> CaptureRule:
        band = 1.0 - threshold
        return cls(threshold + LOW_SHARE * band, MARGIN_SHARE * band)

    def reason(self, p: Prediction) -> str | None:
        """Why the model's doubt keeps this answer, or None (the random sample is drawn apart)."""
        if p.out_of_scope:
            return "out_of_scope"
        ranking = p.ranking
        if len(ranking) > 1 and ranking[0].confidence - ranking[1].confidence < self.margin:
            return "ambiguous"
        if p.confidence < self.low:
            return "low_confidence"
        return None


class ReviewCapture:
    """One worker's capture: `offer` on the request path, a thread writing to `store`."""

    def __init__(
        self,
        store: ReviewStore,
        sample_rate: float = 0.01,
        max_queue: int = 10_000,
        max_items: int = 10_000,
        max_age_seconds: float = 30 * 86400,
        interval: float = 0.25,
        prune_every: float = 10.0,
    ):
        self.store = store
        self.sample_rate = sample_rate
        self.max_queue = max_queue
        self.max_items = max_items
        self.max_age_seconds = max_age_seconds
        self.interval = interval
        self.prune_every = prune_every
        self._queue: collections.deque[tuple[Prediction, str, float]] = collections.deque()
        self._rules: dict[float, CaptureRule] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._warned = float("-inf")

    # --- on the request path ------------------------------------------------

    def offer(self, predictions: Sequence[Prediction], threshold: float) -> None:
        """Queue the answers worth a person's look; never blocks, never raises."""
        rule = self._rules.get(threshold)
        if rule is None:
            rule = self._rules[threshold] = CaptureRule.for_threshold(threshold)
        now = time.time()
        sample = self.sample_rate
        for p in predictions:
            reason = "sample" if sample and random.random() < sample else rule.reason(p)
            if reason is None:
                continue
            if len(self._queue) >= self.max_queue:
                labelled(REVIEW_DROPPED, reason, "queue_full").inc()
                continue
            self._queue.append((p, reason, now))
        if len(self._queue) >= BATCH:
            self._wake.set()

    # --- the writer -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="intently-review", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (as far as `timeout` allows) and stop the thread."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout)
            self._thread = None

    def flush(self) -> None:
        """Write everything queued now, in the caller's thread (tests; the writer does it by itself)."""
        self._drain()

    def _loop(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain()
            if time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + self.prune_every
        self._drain()
        self.store.close()

    def prune(self) -> int:
        try:
            return self.store.prune(self.max_items, self.max_age_seconds, time.time())
        except Exception as exc:
            self._warn("the review inbox could not be pruned", exc)
            return 0

    def _drain(self) -> None:
        with self._write_lock:
            while self._queue:
                batch: list[tuple[Prediction, str, float]] = []
                while self._queue and len(batch) < BATCH:
                    batch.append(self._queue.popleft())
                self._write(batch)

    def _write(self, batch: list[tuple[Prediction, str, float]]) -> None:
        sightings: dict[str, Sighting] = {}
        reasons: collections.Counter[str] = collections.Counter()
        for p, reason, seen in batch:
            reasons[reason] += 1
            top = p.ranking[0]
            ranking = [(r.intent, r.confidence) for r in p.ranking[:RANKED]]
            key = text_key(p.text)
            found = sightings.get(key)
            if found is None:
                sightings[key] = Sighting(
                    p.text, top.intent, p.confidence, p.out_of_scope, reason, p.model_version, ranking, seen
                )
                continue
            found.count += 1
            found.intent, found.confidence, found.out_of_scope = top.intent, p.confidence, p.out_of_scope
            found.model_version, found.ranking, found.seen = p.model_version, ranking, max(found.seen, seen)
            found.reason = "sample" if "sample" in (found.reason, reason) else reason
        try:
            self.store.record(list(sightings.values()))
        except Exception as exc:  # a store that is down, locked or full: the items go, counted
            for reason, n in reasons.items():
                labelled(REVIEW_DROPPED, reason, "store_unavailable").inc(n)
            self._warn(f"review inbox: {len(batch)} requests dropped, the inbox cannot be written", exc)
            return
        for reason, n in reasons.items():
            labelled(REVIEW_KEPT, reason).inc(n)

    def _warn(self, what: str, exc: Exception) -> None:
        """At most one warning a minute; the exception's type and message, never an utterance
        (StoreUnavailable names the file or the database; other errors only by their type)."""
        now = time.monotonic()
        if now - self._warned < WARN_EVERY:
            return
        self._warned = now
        detail = str(exc) if isinstance(exc, StoreUnavailable) else type(exc).__name__
        log.warning("%s (%s)", what, detail)
