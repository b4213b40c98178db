"""Two replicas on one PostgreSQL: separate `intently serve` processes, each with its own cache
directory and no shared file; the database is all they have in common."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import NEW_INTENT, SMALL, Server
from tests.support.postgres import PostgresServer
from tests.support.traffic import Traffic
from training.default_model import SEED_ENV

TOKEN = "replica-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {**SMALL, "epochs": 3}
SLOW = {**SMALL, "epochs": 1000}  # runs long enough to be killed mid-way
Replicas = Callable[..., list[Server]]


@pytest.fixture
def replicas(serve, database_url: str, small_store_template: Path, tmp_path: Path) -> Replicas:
    """Starts replicas of one database; an empty one gets its first model from a seed store, as
    the image's built-in one (a small model here, quick to copy, fetch and load)."""

    def start(*names: str) -> list[Server]:
        servers = [
            serve(
                env={
                    "INTENTLY_DATABASE_URL": database_url,
                    "INTENTLY_MODEL_STORE": str(tmp_path / f"cache-{name}"),
                    "INTENTLY_ADMIN_TOKEN": TOKEN,
                    SEED_ENV: str(small_store_template),
                },
                ready=False,
            )
            for name in names
        ]
        for server in servers:
            server.wait_ready()
        return servers

    return start


def _served(server: Server) -> str:
    return httpx.post(f"{server.url}/v1/classify", json={"text": "hello"}, timeout=10).json()["model_version"]


def _until(check: Callable[[], object], timeout: float, what: str, every: float = 0.02) -> float:
    """Seconds until `check()` is true."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(every)
    return time.monotonic() - start


def _job(server: Server, job_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/training-jobs/{job_id}", headers=AUTH, timeout=10).json()


def _submit(server: Server, options: dict, activate: str = "always") -> str:
    examples = [{"text": t, "intent": "order_food"} for t in NEW_INTENT]
    body = {"examples": examples, "mode": "append", "activate": activate, "options": options}
    r = httpx.post(f"{server.url}/v1/training-jobs", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_replicas_share_one_built_in_version_and_every_activation(replicas: Replicas) -> None:
    a, b = replicas("a", "b")  # started together on an empty database
    listed = httpx.get(f"{a.url}/v1/models", headers=AUTH).json()
    assert len(listed["versions"]) == 1, "each replica put a built-in model in"
    first = listed["active"]
    assert _served(a) == _served(b) == first

    with Traffic([a.url, b.url]) as traffic:
        job_id = _submit(a, FAST)
        _until(lambda: _job(b, job_id)["state"] in ("succeeded", "failed"), 300, "the job finished")
        job = _job(b, job_id)
        assert job["state"] == "succeeded" and job["activated"], job
        new = job["version"]
        # The job's record is written just after its activation: both serve it 2 s after at most.
        for server in (a, b):
            waited = _until(lambda s=server: _served(s) == new, 2.0, f"{server.url} serves {new}")
            print(f"{server.url} served the new version {waited:.3f} s after the job was seen finished")
        for i in range(6):  # A activates the first version, B rolls back to the new one; under traffic
            if i % 2:
                r = httpx.post(f"{b.url}/v1/models/rollback", headers=AUTH, timeout=30)
            else:
                r = httpx.post(f"{a.url}/v1/models/{first}/activate", headers=AUTH, timeout=30)
            assert r.status_code == 200, r.text
            target = r.json()["active"]
            assert target == (new if i % 2 else first)
            for server in (a, b):
                _until(lambda s=server, t=target: _served(s) == t, 2.0, f"{server.url} serves {target}")
    assert traffic.failures == Counter(), traffic.failures
    assert traffic.ok > 100 and set(traffic.versions) == {first, new}


def test_killing_the_replica_that_trains_fails_its_job_from_the_other(
    replicas: Replicas, tmp_path: Path
) -> None:
    a, b = replicas("a", "b")
    active = _served(a)
    job_id = _submit(a, SLOW)
    _until(lambda: _job(b, job_id)["progress"]["epoch"] >= 1, 120, "the job is training", every=0.2)
    logs = {name: tmp_path / f"cache-{name}" / "jobs" / job_id / "job.log" for name in ("a", "b")}
    runners = [name for name, log in logs.items() if log.exists()]
    assert len(runners) == 1, f"the job ran on {runners}: exactly one replica must claim it"
    trainer, survivor = (a, b) if runners == ["a"] else (b, a)
    os.killpg(trainer.proc.pid, signal.SIGKILL)  # the replica and its training process
    trainer.proc.wait(10)
    _until(lambda: _job(survivor, job_id)["state"] == "failed", 60, "the job is marked failed", every=0.2)
    assert "interrupted" in _job(survivor, job_id)["error"]
    assert _served(survivor) == active
    assert httpx.get(f"{survivor.url}/v1/models", headers=AUTH).json()["active"] == active


def test_a_database_restart_costs_no_classify_request(
    replicas: Replicas, restartable_postgres: PostgresServer
) -> None:
    a, b = replicas("a", "b")
    with Traffic([a.url, b.url]) as traffic:
        time.sleep(0.5)
        with restartable_postgres.stopped():
            for server in (a, b):
                r = httpx.get(f"{server.url}/v1/models", headers=AUTH, timeout=30)
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "store_unavailable" and "database" in r.json()["message"]
                assert r.headers["retry-after"]
                r = httpx.get(f"{server.url}/v1/training-jobs", headers=AUTH, timeout=30)
                assert r.status_code == 503 and r.json()["error"] == "job_store_unavailable", r.text
            served_while_down = traffic.ok
            time.sleep(1.0)
            assert traffic.ok > served_while_down, "classification stopped while the database was down"
        for server in (a, b):
            _until(
                lambda s=server: httpx.get(f"{s.url}/v1/models", headers=AUTH, timeout=30).status_code == 200,
                30,
                "the admin API is back",
                every=0.2,
            )
        job_id = _submit(b, FAST, activate="never")  # the queue works again too: a job is claimed
        _until(lambda: _job(a, job_id)["state"] != "queued", 60, "a job claimed after the restart", every=0.2)
        assert _job(a, job_id)["state"] in ("running", "succeeded")
    assert traffic.failures == Counter(), traffic.failures
    assert traffic.ok > 50
