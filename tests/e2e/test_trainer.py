"""Slim replicas and a trainer, as real processes: `intently serve` where torch cannot be imported
accepts a training job, whose status says no trainer is alive; `intently worker` (with torch), on
the same store, claims and runs it; the replica then serves the version it made. On the directory
store (one machine) and on PostgreSQL (the replica and the trainer share nothing but the database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NEW_INTENT, ROOT, SMALL, Server
from tests.support.no_torch import no_torch_env
from training.default_model import SEED_ENV

pytestmark = pytest.mark.process
TOKEN = "trainer-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {**SMALL, "epochs": 3}


def _until(check: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        time.sleep(every)


def _job(server: Server, job_id: str) -> dict:
    r = httpx.get(f"{server.url}/v1/training-jobs/{job_id}", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _submit(server: Server) -> dict:
    examples = [{"text": t, "intent": "order_food"} for t in NEW_INTENT]
    body = {"examples": examples, "mode": "append", "activate": "always", "options": FAST}
    r = httpx.post(f"{server.url}/v1/training-jobs", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 202, r.text
    return dict(r.json())


@pytest.fixture(params=["directory", "postgres"])
def store_env(request: pytest.FixtureRequest, small_store_template: Path, tmp_path: Path) -> Iterator:
    """The environment of a replica or trainer named `name`: its store, and the seed of a first model."""
    url = request.getfixturevalue("database_url") if request.param == "postgres" else None

    def env(name: str) -> dict[str, str]:
        common = {"INTENTLY_ADMIN_TOKEN": TOKEN, SEED_ENV: str(small_store_template), "OMP_NUM_THREADS": "1"}
        if url:  # each process its own cache: the database is all they share
            return {**common, "INTENTLY_DATABASE_URL": url, "INTENTLY_MODEL_STORE": str(tmp_path / name)}
        return {**common, "INTENTLY_MODEL_STORE": str(tmp_path / "store")}

    yield env


def test_a_trainer_runs_the_job_a_replica_without_torch_accepted(serve, store_env, tmp_path: Path) -> None:
    replica: Server = serve(env={**store_env("replica"), **no_torch_env(tmp_path)})
    version = httpx.post(f"{replica.url}/v1/classify", json={"text": "hello"}, timeout=10).json()
    first = version["model_version"]

    queued = _submit(replica)
    time.sleep(2.5)  # a dispatcher in the replica (there must be none) would have claimed it
    record = _job(replica, queued["id"])
    assert record["state"] == "queued", record
    assert record["message"].startswith("waiting for a trainer: none has ever been seen"), record
    assert "intently[train]" in record["message"]

    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env={**os.environ, **store_env("trainer")},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        _until(lambda: _job(replica, queued["id"])["state"] in ("succeeded", "failed"), 300, "the job ran")
        done = _job(replica, queued["id"])
        assert done["state"] == "succeeded" and done["activated"], done
        assert done["message"] is None
        new = done["version"]
        assert new != first
        _until(
            lambda: httpx.post(f"{replica.url}/v1/classify", json={"text": "hello"}).json()["model_version"]
            == new,
            30,
            f"the replica serves {new}",
        )
        # The new intent is the new version's (a 3-epoch model is not asked to be sure of it).
        ranked = httpx.post(f"{replica.url}/v1/classify", json={"text": NEW_INTENT[0], "top_k": 100}).json()
        assert "order_food" in {r["intent"] for r in ranked["ranking"]}, ranked
        # A trainer alive: a job queued now says it waits its turn, not for a trainer.
        second = _submit(replica)
        assert second["state"] == "queued", second
        assert second["message"].startswith("queued: 1 trainer(s) alive"), second
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        code = worker.wait(60)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    output = (tmp_path / "worker.log").read_text()
    assert "running the training jobs of" in output
    # Stopped (mid-job: that job failed), the trainer said so: a job queued now knows no trainer is alive.
    assert _job(replica, second["id"])["state"] in ("queued", "failed")
    third = _submit(replica)
    assert third["message"].startswith("waiting for a trainer: none has been seen for"), third
    assert replica.stop() == 0


def test_a_replica_without_torch_on_an_empty_store_and_no_seed_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--store", str(tmp_path / "empty")],
        env={**os.environ, **no_torch_env(tmp_path)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "is empty" in line and "pip install 'intently[train]'" in line and SEED_ENV in line, line
