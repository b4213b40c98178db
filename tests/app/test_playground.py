"""The page's files and headers, intent examples and evaluation reports, in-process (TestClient)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.routes.playground import STATIC
from store.directory import DirectoryStore
from store.model_store import REPORT_FILE
from tests.conftest import ready_client

TOKEN = "page-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def store_root(small_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("page") / "store"
    shutil.copytree(small_store_template, root)
    return root


@pytest.fixture(scope="module")
def client(store_root: Path) -> Iterator[TestClient]:
    yield from ready_client(Settings(model_store=store_root, admin_token=TOKEN))


@pytest.fixture(scope="module")
def version(store_root: Path) -> str:
    active = DirectoryStore(store_root).active()
    assert active
    return active


def test_the_page_and_its_files_carry_strict_security_headers(client: TestClient) -> None:
    for path, kind in (
        ("/", "text/html"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
    # The API itself keeps its headers (Swagger UI at /docs needs its CDN).
    assert "content-security-policy" not in client.get("/healthz").headers


def test_the_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None, "inline <script>"
    assert "<style" not in html and " style=" not in html and re.search(r"\son[a-z]+=", html) is None
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert re.search(r"https?://", text) is None, f"{name} refers to another site"
        assert "@import" not in text
        assert re.search(r"\.innerHTML|insertAdjacentHTML|document\.write|eval\(", text) is None, name


@pytest.mark.parametrize(
    "path", ["/static/../main.py", "/static/%2e%2e%2fmain.py", "/static/nope.js", "/static/x.py"]
)
def test_only_the_static_files_are_served(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_intent_examples_are_private_unless_the_token_is_sent(client: TestClient, version: str) -> None:
    r = client.get("/v1/intents/ask_time/examples")
    assert r.status_code == 401 and "INTENTLY_PUBLIC_EXAMPLES" in r.json()["message"]
    assert (
        client.get("/v1/intents/ask_time/examples", headers={"Authorization": "Bearer no"}).status_code == 401
    )
    r = client.get("/v1/intents/ask_time/examples?limit=3", headers=AUTH)
    body = r.json()
    assert r.status_code == 200 and body["model_version"] == version and body["intent"] == "ask_time"
    assert len(body["examples"]) == 3 and body["total"] == 51 and "What time is it?" in body["examples"]
    assert client.get("/v1/intents/order_food/examples", headers=AUTH).status_code == 404
    for bad in ("0", "21", "x"):
        r = client.get(f"/v1/intents/ask_time/examples?limit={bad}", headers=AUTH)
        assert r.status_code == 422 and "limit" in r.json()["message"]


def test_public_examples_setting_and_admin_off(store_root: Path) -> None:
    for client in ready_client(Settings(model_store=store_root, public_examples=True)):
        r = client.get("/v1/intents/oos/examples?limit=2")
        assert r.status_code == 200 and len(r.json()["examples"]) == 2
        assert client.get(f"/v1/models/{r.json()['model_version']}/evaluation").json()["examples_included"]
        # A token that is sent is checked, even where it is not needed.
        assert (
            client.get("/v1/intents/oos/examples", headers={"Authorization": "Bearer x"}).status_code == 403
        )
    for client in ready_client(Settings(model_store=store_root)):
        r = client.get("/v1/intents/ask_time/examples")
        assert r.status_code == 403 and r.json()["error"] == "examples_private"


def test_evaluation_report_is_open_but_its_utterances_need_the_token(
    client: TestClient, version: str, store_root: Path
) -> None:
    stored = json.loads((store_root / "versions" / version / REPORT_FILE).read_text(encoding="utf-8"))
    r = client.get(f"/v1/models/{version}/evaluation")
    body = r.json()
    assert r.status_code == 200 and body["version"] == version
    assert body["metrics"] == stored["metrics"] and body["evaluated_on"]["examples"] == stored["metrics"]["n"]
    assert {s["intent"] for s in body["per_intent"]} == set(stored["per_intent"])
    assert len(body["confusion_matrix"]) == len(body["labels"])
    assert body["examples_included"] is False and body["confused_pairs"]
    assert all(p["examples"] is None for p in body["confused_pairs"])
    admin = client.get(f"/v1/models/{version}/evaluation", headers=AUTH).json()
    assert admin["examples_included"] is True and all(p["examples"] for p in admin["confused_pairs"])
    wrong = client.get(f"/v1/models/{version}/evaluation", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401

    png = client.get(body["confusion_png"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_evaluation_passes_entity_scores_through(tagged_store_template: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(tagged_store_template, root)
    version = DirectoryStore(root).active()
    stored = json.loads((root / "versions" / str(version) / REPORT_FILE).read_text(encoding="utf-8"))
    assert {"entity_precision", "entity_recall", "entity_f1"} <= set(stored["metrics"])
    for client in ready_client(Settings(model_store=root)):
        metrics = client.get(f"/v1/models/{version}/evaluation").json()["metrics"]
        assert metrics == stored["metrics"] and set(metrics["entities"]) == {"city", "time"}
        assert set(metrics["entities"]["time"]) == {"precision", "recall", "f1", "support"}


def test_evaluation_errors_say_what_is_wrong(client: TestClient, store_root: Path, version: str) -> None:
    r = client.get("/v1/models/20990101-000000-abcdef/evaluation")
    assert r.status_code == 404 and "no version" in r.json()["message"]
    r = client.get("/v1/models/bad..id/evaluation")
    assert r.status_code == 422 and "invalid version id" in r.json()["message"]
    # A version stored before reports existed: a clear 404, not a 500.
    old = store_root / "versions" / "20200101-000000-0ld000"
    shutil.copytree(store_root / "versions" / version, old)
    (old / REPORT_FILE).unlink()
    (old / "confusion.png").unlink()
    for path in ("evaluation", "confusion.png"):
        r = client.get(f"/v1/models/{old.name}/{path}")
        assert r.status_code == 404 and r.json()["error"] == "no_report", path
    assert "has no evaluation report" in client.get(f"/v1/models/{old.name}/evaluation").json()["message"]


def test_a_fixed_model_directory_answers_clearly(small_model_dir: Path) -> None:
    for client in ready_client(Settings(model_dir=small_model_dir, public_examples=True)):
        served = client.get("/v1/model").json()["version"]
        r = client.get("/v1/intents/ask_time/examples")
        assert r.status_code == 404 and "no training data" in r.json()["message"]
        assert client.get(f"/v1/models/{served}/evaluation").json()["error"] == "no_report"
        r = client.get("/v1/models/20990101-000000-abcdef/evaluation")
        assert r.status_code == 404 and served in r.json()["message"]
