"""The classify fast path (app/fast_path.py): same answers as the route, every error left to the route."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.middleware.gzip import GZipMiddleware

from app import errors
from app.config import Settings
from app.fast_path import ClassifyFastPath, unreplicated
from app.main import create_app
from app.middleware import RequestContext
from app.routes import classify
from tests.conftest import ready_client

# FastAPI reads `application/<anything>+json` as JSON; the fast path takes only application/json.
ROUTE_ONLY = {"content-type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def client(small_model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(Settings(model_dir=small_model_dir, max_text_chars=200, max_body_bytes=4096))


def _answered_by_fast_path(client: TestClient, root: str = "") -> float:
    text = client.get(f"{root}/metrics").text
    found = re.search(r"^intently_classify_fast_path_total ([0-9.e+]+)$", text, re.M)
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


def test_a_body_over_the_limit_gets_one_answer_however_it_comes(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        yield b"a" * 5000
        yield b'"}'

    answers = [
        client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"}),
        client.post("/v1/classify", content=chunks(), headers=ROUTE_ONLY),  # read by the route
        client.post("/v1/classify", json={"text": "a" * 5000}),  # refused on its Content-Length
    ]
    assert [r.status_code for r in answers] == [413] * 3
    assert len({r.content for r in answers}) == 1 and answers[0].json()["error"] == "body_too_large"
    assert client.post("/v1/classify", json={"text": "still fine"}).status_code == 200


@pytest.mark.parametrize(
    ("content_types", "fast", "status"),
    [
        (["application/json", "text/plain"], True, 200),
        (["text/plain", "application/json"], False, 422),  # the route reads the first one too
        (["application/x-www-form-urlencoded", "text/plain"], True, 200),  # a form is read as JSON
    ],
)
def test_the_first_content_type_decides_for_both(
    client: TestClient, content_types: list[str], fast: bool, status: int
) -> None:
    before = _answered_by_fast_path(client)
    headers = [("content-type", value) for value in content_types]
    r = client.post("/v1/classify", content=b'{"text": "What time is it?"}', headers=headers)
    assert r.status_code == status and _answered_by_fast_path(client) == before + fast


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


# --- the fence: what the route does, the fast path does, or it steps aside -------------------


@pytest.mark.parametrize("cors", [[], ["https://bot.example"]])
def test_the_fast_path_replicates_all_the_route_does(small_model_dir: Path, cors: list[str]) -> None:
    """Fails when POST /v1/classify or the app gains something the fast path would skip.

    Then either teach app/fast_path.py to do it too (and name it there) or remove the fast path.
    """
    app = create_app(Settings(model_dir=small_model_dir, cors_origins=cors))
    assert unreplicated(app) == []


async def _rate_limit() -> None:
    """A dependency the route might gain one day."""


async def _timeout(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": "timeout"}, 504)


def _app(inner: list[Any] | None = None, **include: Any) -> FastAPI:
    """The classify route behind the fast path as app/main.py puts them, `inner` middleware inside it."""
    app = FastAPI()
    errors.install(app)
    for cls in inner or []:
        app.add_middleware(cls)
    app.add_middleware(ClassifyFastPath, fastapi_app=app)
    app.add_middleware(RequestContext, max_body_bytes=4096)
    app.include_router(classify.router, **include)
    return app


def test_what_it_would_skip_is_named() -> None:
    assert unreplicated(_app()) == []
    (gap,) = unreplicated(_app(dependencies=[Depends(_rate_limit)]))
    assert gap.startswith("dependencies") and "_rate_limit" in gap
    (gap,) = unreplicated(_app(inner=[GZipMiddleware]))
    assert gap.startswith("middleware") and "GZipMiddleware" in gap
    outer = _app()
    outer.add_middleware(GZipMiddleware)
    (gap,) = unreplicated(outer)
    assert gap.startswith("middleware")
    handled = _app()
    handled.add_exception_handler(TimeoutError, _timeout)
    (gap,) = unreplicated(handled)
    assert gap.startswith("exception handlers") and "TimeoutError" in gap
    assert unreplicated(FastAPI()) == ["no POST /v1/classify route"]


def test_it_steps_aside_in_an_app_it_was_not_checked_against(small_model_dir: Path) -> None:
    app = create_app(Settings(model_dir=small_model_dir))
    app.add_exception_handler(TimeoutError, _timeout)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = _answered_by_fast_path(client)
        r = client.post("/v1/classify", json={"text": "What time is it?"})
        assert r.status_code == 200 and r.json()["intent"] == "ask_time"
        assert _answered_by_fast_path(client) == before  # the route answered it


def test_the_app_under_a_root_path(small_model_dir: Path) -> None:
    """Behind a proxy that mounts the app at /intently (uvicorn's --root-path): every route answers
    under the prefix, the fast path still takes classify (it matches the path without the prefix),
    and its answer and its errors are the route's."""
    app = create_app(Settings(model_dir=small_model_dir))
    with TestClient(app, root_path="/intently") as client:
        assert client.get("/intently/readyz").json()["ready"] is True
        before = _answered_by_fast_path(client, "/intently")
        fast = client.post("/intently/v1/classify", json={"text": "What time is it?"})
        assert _answered_by_fast_path(client, "/intently") == before + 1
        route = client.post("/intently/v1/classify", json={"text": "What time is it?"}, headers=ROUTE_ONLY)
        assert fast.status_code == route.status_code == 200 and fast.content == route.content
        assert fast.json()["intent"] == "ask_time"
        blank = client.post("/intently/v1/classify", json={"text": " "})
        assert blank.status_code == 422 and blank.json()["error"] == "invalid_request"
        assert _answered_by_fast_path(client, "/intently") == before + 1
        batch = client.post("/intently/v1/classify/batch", json={"texts": ["What time is it?"]})
        assert batch.status_code == 200 and batch.json()["results"][0]["intent"] == "ask_time"
        parse = client.post("/intently/model/parse", json={"text": "What time is it?"})
        assert parse.json()["intent"]["name"] == "ask_time"
        assert client.get("/intently/openapi.json").json()["servers"] == [{"url": "/intently"}]
        assert client.get("/intently/nowhere").json()["error"] == "not_found"
