"""An empty admin token turns the admin API off rather than accepting an empty bearer."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from app.main import create_app


def test_empty_admin_token_means_admin_off(default_store: Path) -> None:
    settings = Settings(model_store=default_store, admin_token=SecretStr(""))
    with TestClient(create_app(settings)) as client:
        for headers in ({}, {"Authorization": "Bearer "}):
            response = client.get("/v1/models", headers=headers)
            assert response.status_code == 403, response.text
            assert response.json()["error"] == "admin_disabled"


def test_set_admin_token_still_guards(default_store: Path) -> None:
    settings = Settings(model_store=default_store, admin_token=SecretStr("s3cret"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
