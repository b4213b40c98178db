"""The review inbox on real servers: two workers and two PostgreSQL replicas feed one inbox, and an
inbox whose store is down fails no request, counts its drops and logs no utterance."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.support.postgres import PostgresServer
from training.default_model import SEED_ENV

TOKEN = "review-e2e-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OOS_TEXT = "colorless green ideas sleep furiously"
SECRET = "my card number is 4111 1111 and the pin is 9876"
REVIEW_ENV = {
    "INTENTLY_REVIEW": "true",
    "INTENTLY_REVIEW_SAMPLE_RATE": "0",
    "INTENTLY_ADMIN_TOKEN": TOKEN,
    "INTENTLY_LOG_LEVEL": "debug",  # the privacy check below reads every line, debug ones included
}


def _send(url: str, text: str) -> httpx.Response:
    """On a fresh connection each time, so that any worker may take it."""
    return httpx.post(f"{url}/v1/classify", json={"text": text}, timeout=10)


def _item(server: Server, text: str, count: int, timeout: float = 15.0) -> dict:
    """The inbox's item of `text` once it has been seen `count` times (items land within seconds)."""
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{server.url}/v1/review?limit=500", headers=AUTH, timeout=10)
        if r.status_code == 503:  # the database is coming back: the pool reconnects
            time.sleep(0.2)
            continue
        found = [i for i in r.json()["items"] if i["text"] == text]
        if found and found[0]["count"] >= count:
            return found[0]
        time.sleep(0.2)
    raise TimeoutError(f"no item seen {count} times within {timeout} s: {found}")


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _no_utterance_logged(*servers: Server) -> None:
    for server in servers:
        assert server.log_path is not None
        log = server.log_path.read_text(errors="replace")
        assert "/v1/classify" in log  # the log was written, and read
        # The secret's words with their spaces: a request id in the log is hex, and may hold "4111".
        assert OOS_TEXT not in log and "4111 1111" not in log and "pin is 9876" not in log


def test_two_workers_feed_one_inbox(serve: Callable[..., Server], small_store: Path) -> None:
    server = serve("--workers", "2", env={"INTENTLY_MODEL_STORE": str(small_store), **REVIEW_ENV})
    n = 30
    workers = Counter()
    for _ in range(n):
        r = _send(server.url, OOS_TEXT)
        assert r.status_code == 200 and r.json()["out_of_scope"]
        workers[r.headers["x-intently-worker"]] += 1
    assert len(workers) == 2, f"one worker took every request: {workers}"
    item = _item(server, OOS_TEXT, n)
    assert item["count"] == n and item["reason"] == "out_of_scope"
    assert [i["text"] for i in httpx.get(f"{server.url}/v1/review", headers=AUTH).json()["items"]] == [
        OOS_TEXT
    ]
    assert _metric(server, "intently_review_kept_total") == n
    _no_utterance_logged(server)


def _replica(serve: Callable[..., Server], url: str, cache: Path, seed: Path) -> Server:
    env = {
        "INTENTLY_DATABASE_URL": url,
        "INTENTLY_MODEL_STORE": str(cache),
        SEED_ENV: str(seed),
        **REVIEW_ENV,
    }
    return serve(env=env)


def test_two_postgres_replicas_feed_one_inbox(
    serve: Callable[..., Server], database_url: str, small_store_template: Path, tmp_path: Path
) -> None:
    a = _replica(serve, database_url, tmp_path / "cache-a", small_store_template)
    b = _replica(serve, database_url, tmp_path / "cache-b", small_store_template)
    n = 10
    for server in (a, b) * (n // 2):
        assert _send(server.url, OOS_TEXT).status_code == 200
    item = _item(a, OOS_TEXT, n)
    assert item["count"] == n
    assert _item(b, OOS_TEXT, n)["id"] == item["id"]
    # A label given on one replica is what the other lists.
    assert (
        httpx.put(f"{b.url}/v1/review/{item['id']}", json={"label": "oos"}, headers=AUTH).status_code == 200
    )
    assert _item(a, OOS_TEXT, n)["label"] == "oos"
    _no_utterance_logged(a, b)


def test_an_unreachable_inbox_fails_no_request(
    serve: Callable[..., Server],
    restartable_postgres: PostgresServer,
    database_url: str,
    small_store_template: Path,
    tmp_path: Path,
) -> None:
    """The database goes down under a serving replica: every classify still answers 200 (the model is
    in memory), the inbox drops and counts what it meant to keep, and the log names no utterance."""
    server = _replica(serve, database_url, tmp_path / "cache", small_store_template)
    assert _send(server.url, OOS_TEXT).status_code == 200
    _item(server, OOS_TEXT, 1)
    with restartable_postgres.stopped():
        answers = [_send(server.url, f"{SECRET} {OOS_TEXT} {i}") for i in range(60)]
        answers += [
            httpx.post(f"{server.url}/v1/classify/batch", json={"texts": [SECRET, OOS_TEXT]}, timeout=10),
            httpx.post(f"{server.url}/model/parse", json={"text": SECRET}, timeout=10),
        ]
        deadline = time.monotonic() + 30
        while _metric(server, "intently_review_dropped_total") < 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        dropped = _metric(server, "intently_review_dropped_total")
        listing = httpx.get(f"{server.url}/v1/review", headers=AUTH, timeout=30)
    assert [r.status_code for r in answers] == [200] * len(answers)
    assert dropped >= 1
    assert listing.status_code == 503 and listing.json()["error"] == "store_unavailable"
    # Back up (once the pool has its connections again: a sighting before that is dropped, by
    # design): capture goes on.
    _item(server, OOS_TEXT, 1, timeout=30)
    assert _send(server.url, OOS_TEXT).status_code == 200
    _item(server, OOS_TEXT, 2, timeout=30)
    _no_utterance_logged(server)
    assert "review inbox" in (server.log_path.read_text() if server.log_path else "")
