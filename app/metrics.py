"""Prometheus metrics, correct with one worker or many.

With several uvicorn workers each process writes its samples to files in
`PROMETHEUS_MULTIPROC_DIR` (set by `intently serve` before any worker
starts) and `/metrics` merges them; with one process the default registry
is used directly.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client import multiprocess as _mp

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # `_created` series double the output and nobody graphs them

REQUESTS = Counter("intently_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "intently_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PREDICTIONS = Counter(
    "intently_predictions_total",
    "Utterances classified, by predicted intent ('oos': out of scope)",
    ["intent"],
)
FAST_PATH = Counter(
    "intently_classify_fast_path_total",
    "POST /v1/classify requests answered beneath the framework's routing (app/fast_path.py)",
)
OUT_OF_SCOPE = Counter("intently_out_of_scope_total", "Utterances classified as out of scope")
CLASSIFIED = Counter("intently_classified_total", "Utterances classified")
MODEL_INFO = Gauge(
    "intently_model_info",
    "1 for the model version a worker serves",
    ["version"],
    multiprocess_mode="livemostrecent",
)
BATCH_SIZE = Histogram(
    "intently_inference_batch_size",
    "Utterances per forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

REVIEW_KEPT = Counter(
    "intently_review_kept_total", "Requests written to the review inbox, by why they were kept", ["reason"]
)
REVIEW_DROPPED = Counter(
    "intently_review_dropped_total",
    "Requests the review inbox meant to keep but dropped: 'queue_full' or 'store_unavailable'",
    ["reason", "cause"],
)
REVIEW_LABELLED = Counter(
    "intently_review_labelled_total",
    "Review items labelled, by why they were kept and as what: 'intent', 'oos' or 'discarded'",
    ["reason", "as"],
)


_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, remembered: labels() checks, locks and hashes on every call.

    It adds up on the hottest path; the label sets are routes, statuses
    and intents, so the cache stays small (and is capped).
    """
    key = (id(metric), labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < 10_000:
            _CHILDREN[key] = found
    return found


def observe_predictions(intents: list[str | None]) -> None:
    for intent in intents:
        labelled(PREDICTIONS, intent or "oos").inc()
    CLASSIFIED.inc(len(intents))
    out = sum(1 for i in intents if i is None)
    if out:
        OUT_OF_SCOPE.inc(out)


def model_swapped(old: str | None, new: str) -> None:
    if old:
        MODEL_INFO.labels(old).set(0)
    MODEL_INFO.labels(new).set(1)


def render() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        _mp.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
