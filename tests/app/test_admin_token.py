"""Admin access: an empty token turns the admin API off, and a set one guards every admin route."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.admin import require_admin, utterance_access
from app.config import Settings
from app.main import create_app
from model.directory_store import DirectoryStore

TOKEN = "s3cret"
# The routes anyone may call: every other route of the app must want the admin token, so a
# new route that forgets it fails here until it is declared public.
PUBLIC = {
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/classify"),
    ("POST", "/v1/classify/batch"),
    ("GET", "/v1/intents"),
    ("GET", "/v1/model"),
    ("GET", "/v1/models/{version}/confusion.png"),
    ("POST", "/model/parse"),
    ("GET", "/version"),
    ("GET", "/status"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


@pytest.fixture
def store(small_store_template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(small_store_template, root)
    return root


def _wants(dependant: Dependant, call: Any) -> bool:
    return any(d.call is call or _wants(d, call) for d in dependant.dependencies)


def _routes(app: FastAPI) -> dict[tuple[str, str], Any]:
    """Every (method, path) the app answers, with what FastAPI knows of its route."""
    try:  # FastAPI 0.165 and later include routers lazily: their routes are not in app.routes
        from fastapi.routing import iter_route_contexts

        routes: Iterable[Any] = iter_route_contexts(app.routes)
    except ImportError:
        routes = app.routes
    found = {}
    for route in routes:
        for method in (getattr(route, "methods", None) or set()) - {"HEAD"}:
            found[(method, route.path)] = route
    return found


def _url(path: str, version: str) -> str:
    fill = {"version": version, "intent": "ask_time", "job_id": "0123456789abcdef", "name": "app.js"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: fill[m.group(1)], path)


def test_empty_admin_token_means_admin_off(store: Path) -> None:
    settings = Settings(model_store=store, admin_token=SecretStr(""))
    with TestClient(create_app(settings)) as client:
        for headers in ({}, {"Authorization": "Bearer "}):
            response = client.get("/v1/models", headers=headers)
            assert response.status_code == 403, response.text
            assert response.json()["error"] == "admin_disabled"


def test_every_route_is_public_or_wants_the_admin_token(store: Path) -> None:
    app = create_app(Settings(model_store=store, admin_token=SecretStr(TOKEN)))
    routes = _routes(app)
    api = {key: r for key, r in routes.items() if getattr(r, "dependant", None) is not None}
    admin = {key for key, r in api.items() if _wants(r.dependant, require_admin)}
    private_data = {key for key, r in api.items() if _wants(r.dependant, utterance_access)}
    assert set(routes) >= PUBLIC, sorted(PUBLIC - set(routes))  # no stale entry in the list
    assert not admin & PUBLIC
    unguarded = set(routes) - PUBLIC - admin - private_data
    assert unguarded == set(), f"routes with no admin check, not declared public: {sorted(unguarded)}"
    # The admin API as it is today: so that a route dropping its check cannot go unnoticed.
    assert {path for _, path in admin} >= {"/v1/models", "/v1/models/{version}", "/v1/training-jobs"}
    assert len(admin) >= 7

    version = DirectoryStore(store).active() or ""
    with TestClient(app) as client:
        for method, path in sorted(admin | private_data):
            url = _url(path, version)
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": f"Basic {TOKEN}"}):
                if (method, path) in private_data and "Bearer" not in str(headers):
                    continue  # no bearer: anonymous, which the route may answer without utterances
                r = client.request(method, url, headers=headers, **body)
                assert r.status_code == 401, (method, url, headers, r.status_code, r.text)
                assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
        # And the token opens them: a list of versions, not a refusal.
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert DirectoryStore(store).active() == version  # no refused request changed anything
