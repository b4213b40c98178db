"""The classify fast path (app/fast_path.py): same answers as the route, every error left to the route."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from tests.conftest import ready_client

# FastAPI reads `application/<anything>+json` as JSON; the fast path takes only application/json.
ROUTE_ONLY = {"content-type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def client(small_model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(Settings(model_dir=small_model_dir, max_text_chars=200, max_body_bytes=4096))


def _answered_by_fast_path(client: TestClient) -> float:
    found = re.search(r"^intently_classify_fast_path_total ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    assert found, "the fast-path counter is missing from /metrics"
    return float(found.group(1))


@pytest.mark.parametrize(
    "payload", [{"text": "What time is it?"}, {"text": "bake me some bread", "top_k": 2}]
)
def test_same_bytes_as_the_route(client: TestClient, payload: dict) -> None:
    before = _answered_by_fast_path(client)
    fast = client.post("/v1/classify", json=payload)
    assert _answered_by_fast_path(client) == before + 1
    route = client.post("/v1/classify", json=payload, headers=ROUTE_ONLY)
    assert _answered_by_fast_path(client) == before + 1  # the route answered this one
    assert fast.status_code == route.status_code == 200
    assert fast.content == route.content
    assert fast.headers["content-type"] == route.headers["content-type"] == "application/json"
    assert len(fast.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"text": ', 400, "malformed_json"),
        (b'{"text": "   "}', 422, "invalid_request"),
        (b'{"text": "hi", "top_k": 0}', 422, "invalid_request"),
        (b'{"text": "hi", "top_k": 10000}', 422, "invalid_request"),
        (b'{"text": "a\\ud800b"}', 422, "invalid_request"),
        (b'{"top_k": 3}', 422, "invalid_request"),
        (b"[1, 2]", 422, "invalid_request"),
    ],
)
def test_errors_are_the_routes(client: TestClient, body: bytes, status: int, error: str) -> None:
    before = _answered_by_fast_path(client)
    fast = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    route = client.post("/v1/classify", content=body, headers=ROUTE_ONLY)
    assert fast.status_code == route.status_code == status
    assert fast.json() == route.json() and fast.json()["error"] == error
    assert _answered_by_fast_path(client) == before


@pytest.mark.parametrize("headers", [{"content-type": "application/json"}, ROUTE_ONLY])
def test_streamed_body_over_the_limit_is_refused(client: TestClient, headers: dict) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"a" * 5000
        yield b'"}'

    r = client.post("/v1/classify", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert client.post("/v1/classify", json={"text": "still fine"}).status_code == 200


@pytest.mark.parametrize(
    ("content_type", "fast"),
    [
        ("application/json; charset=utf-8", True),
        ("Application/JSON", True),
        ("application/jsonl", False),
        ("application/json5", False),
        ("text/plain", False),
    ],
)
def test_only_json_takes_the_fast_path(client: TestClient, content_type: str, fast: bool) -> None:
    body = b'{"text": "What time is it?"}'
    before = _answered_by_fast_path(client)
    r = client.post("/v1/classify", content=body, headers={"content-type": content_type})
    assert _answered_by_fast_path(client) == before + fast
    if fast:
        assert r.status_code == 200 and r.json()["intent"] == "ask_time"
    else:  # the route reads none of these as JSON
        assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_metrics_and_other_routes_unchanged(client: TestClient) -> None:
    client.post("/v1/classify", json={"text": "What time is it?"})
    text = client.get("/metrics").text
    assert 'intently_http_requests_total{method="POST",route="/v1/classify",status="200"}' in text
    assert client.post("/v1/classify/batch", json={"texts": ["hi", "what time is it"]}).status_code == 200
    assert client.get("/v1/classify").status_code == 405
