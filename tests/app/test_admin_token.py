"""Admin access: an empty token turns the admin API off, and a set one guards every admin route."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.admin import require_admin, utterance_access
from app.config import Settings
from app.main import create_app
from store.directory import DirectoryStore
from tests.support.routes import app_routes, wants

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


def _url(path: str, version: str) -> str:
    fill = {
        "version": version,
        "intent": "ask_time",
        "job_id": "0123456789abcdef",
        "name": "app.js",
        "item_id": "0123456789abcdef",
    }
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: fill[m.group(1)], path)


@pytest.mark.parametrize("token", [None, SecretStr("")], ids=["unset", "empty"])
def test_without_a_token_every_admin_route_is_off(small_store: Path, token: SecretStr | None) -> None:
    """No token, or an empty one (`INTENTLY_ADMIN_TOKEN=` from a template), turns off every route
    that wants the admin token: found by walking the app's routes, not by OpenAPI tag."""
    assert Settings.model_fields["admin_token"].default is None
    app = create_app(Settings(model_store=small_store, admin_token=token))
    api = {key: r for key, r in app_routes(app).items() if getattr(r, "dependant", None) is not None}
    admin = {key for key, r in api.items() if wants(r.dependant, require_admin)}
    private_data = {key for key, r in api.items() if wants(r.dependant, utterance_access)}
    assert {path for _, path in admin} >= {"/v1/models", "/v1/models/{version}", "/v1/training-jobs"}
    version = DirectoryStore(small_store).active() or ""
    with TestClient(app) as client:
        for method, path in sorted(admin | private_data):
            body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": "Bearer "}):
                if (method, path) in private_data and headers.get("Authorization") != f"Bearer {TOKEN}":
                    continue  # no token sent: anonymous, which the route may answer without utterances
                r = client.request(method, _url(path, version), headers=headers, **body)
                assert r.status_code == 403, (method, path, headers, r.text)
                assert r.json()["error"] == "admin_disabled" and "INTENTLY_ADMIN_TOKEN" in r.json()["message"]
    assert DirectoryStore(small_store).active() == version


def test_every_route_is_public_or_wants_the_admin_token(small_store: Path) -> None:
    app = create_app(Settings(model_store=small_store, admin_token=SecretStr(TOKEN)))
    routes = app_routes(app)
    api = {key: r for key, r in routes.items() if getattr(r, "dependant", None) is not None}
    admin = {key for key, r in api.items() if wants(r.dependant, require_admin)}
    private_data = {key for key, r in api.items() if wants(r.dependant, utterance_access)}
    assert set(routes) >= PUBLIC, sorted(PUBLIC - set(routes))  # no stale entry in the list
    assert not admin & PUBLIC
    unguarded = set(routes) - PUBLIC - admin - private_data
    assert unguarded == set(), f"routes with no admin check, not declared public: {sorted(unguarded)}"
    # The admin API as it is today: so that a route dropping its check cannot go unnoticed.
    assert {path for _, path in admin} >= {"/v1/models", "/v1/models/{version}", "/v1/training-jobs"}
    assert len(admin) >= 7

    version = DirectoryStore(small_store).active() or ""
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
        assert DirectoryStore(small_store).active() == version  # no refused request changed anything
