"""Deleting a model version through the admin API, and the refusal to delete the active one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from store.directory import DirectoryStore
from tests.conftest import ready_client
from training.network import load_net
from training.readers import Example

AUTH = {"Authorization": "Bearer delete-test-token"}


@pytest.fixture
def two_versions(small_store: Path) -> tuple[Path, str, str]:
    """A store whose active version has an older sibling (the same weights, another id)."""
    root = small_store
    store = DirectoryStore(root)
    active = store.active() or ""
    net, meta, _ = load_net(store.path(active))
    rows = [Example.from_json(r) for r in store.read_data(active)]
    older = store.add(net, replace(meta, version=f"{active}-old"), rows)
    return root, active, older


@pytest.fixture
def client(two_versions: tuple[Path, str, str]) -> Iterator[TestClient]:
    root, _, _ = two_versions
    settings = Settings(model_store=root, admin_token=SecretStr(AUTH["Authorization"].split()[1]))
    yield from ready_client(settings)


def _listed(client: TestClient) -> list[str]:
    return [v["version"] for v in client.get("/v1/models", headers=AUTH).json()["versions"]]


def test_the_active_version_cannot_be_deleted(
    client: TestClient, two_versions: tuple[Path, str, str]
) -> None:
    root, active, older = two_versions
    r = client.delete(f"/v1/models/{active}", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"] == "conflict" and "active" in r.json()["message"]
    assert DirectoryStore(root).path(active).is_dir() and sorted(_listed(client)) == sorted([active, older])
    answer = client.post("/v1/classify", json={"text": "What time is it?"}).json()
    assert answer["model_version"] == active and answer["intent"] == "ask_time"


def test_a_deleted_version_is_gone_and_cannot_be_activated(
    client: TestClient, two_versions: tuple[Path, str, str]
) -> None:
    root, active, older = two_versions
    r = client.delete(f"/v1/models/{older}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": older}
    assert _listed(client) == [active] and client.get("/v1/models", headers=AUTH).json()["active"] == active
    versions = DirectoryStore(root).versions_dir
    assert sorted(p.name for p in versions.iterdir()) == [active]  # its data too, no trash left
    for r in (
        client.delete(f"/v1/models/{older}", headers=AUTH),
        client.post(f"/v1/models/{older}/activate", headers=AUTH),
    ):
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.post("/v1/classify", json={"text": "What time is it?"}).json()["model_version"] == active


def test_a_version_id_that_names_another_path_deletes_nothing(
    client: TestClient, two_versions: tuple[Path, str, str]
) -> None:
    root, active, older = two_versions
    for bad in ("..", ".deleting-x", "a%2F..%2F..", "%2E%2E"):
        r = client.delete(f"/v1/models/{bad}", headers=AUTH)
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
    assert sorted(_listed(client)) == sorted([active, older]) and (root / "active.json").exists()
