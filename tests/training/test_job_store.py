"""The job queue's contract, on both backends: submit, claim (one winner), heartbeat, reap, run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from store.jobs import (
    INTERRUPTED,
    STALE_SECONDS,
    JobError,
    JobRequest,
    JobStore,
    SqliteJobStore,
    open_job_store,
)
from store.model_store import ModelStore
from store.postgres_jobs import PostgresJobStore
from tests.conftest import NO_PRETRAINED
from training.job_request import submit
from training.jobs import run_job
from training.readers import Example

Replica = Callable[[str], ModelStore]
FAST = {"epochs": 2, "min_steps": 0, "embed_dim": 16, "hidden_dim": 16, "ngram_buckets": 500, **NO_PRETRAINED}


@pytest.fixture
def rows(assistant_intents: list[Example]) -> list[Example]:
    return assistant_intents[:60]


def _request(rows: list[Example], **overrides: object) -> JobRequest:
    fields: dict[str, object] = {"mode": "replace", "activate": "always", "options": FAST, **overrides}
    return JobRequest(rows, **fields)  # type: ignore[arg-type]


def _age_heartbeat(jobs: JobStore, job_id: str, seconds: float) -> None:
    """Make the job's last heartbeat `seconds` old, on the clock its backend judges by."""
    if isinstance(jobs, PostgresJobStore):
        with jobs.db.connection() as conn:
            conn.execute(
                "UPDATE intently_jobs SET heartbeat = extract(epoch from clock_timestamp()) - %s"
                " WHERE id = %s",
                (seconds, job_id),
            )
    else:
        assert isinstance(jobs, SqliteJobStore)
        jobs.update(job_id, heartbeat=time.time() - seconds)


def test_a_job_keeps_what_was_asked(open_replica: Replica, rows: list[Example]) -> None:
    jobs = open_job_store(open_replica("a"))
    rules = {"synonyms": {"NYC": "New York"}}
    record = submit(jobs, _request(rows, rules=rules, tolerance=0.05, activate="never"))
    assert record["state"] == "queued" and record["examples"] == len(rows) and record["options"] == FAST
    assert record["progress"] == {"epoch": 0, "epochs": 2} and record["activate"] == "never"
    queued = jobs.input(record["id"])
    assert queued.examples == [e.to_json() for e in rows]
    assert queued.rules == rules and queued.tolerance == 0.05 and queued.options == FAST
    assert [j["id"] for j in jobs.list()] == [record["id"]]
    with pytest.raises(KeyError):
        jobs.get("0123456789abcdef")
    with pytest.raises(JobError, match="mode"):
        submit(jobs, _request(rows, mode="merge"))
    with pytest.raises(JobError, match="options"):
        submit(jobs, _request(rows, options={"epochs": "many"}))


def test_jobs_are_claimed_oldest_first_one_at_a_time(open_replica: Replica, rows: list[Example]) -> None:
    jobs = open_job_store(open_replica("a"))
    first, second = (submit(jobs, _request(rows))["id"] for _ in range(2))
    assert [j["id"] for j in jobs.list()] == [second, first]  # newest first
    assert jobs.claim_next() == first
    assert jobs.claim_next() is None  # one runs: the next waits
    jobs.update(first, state="succeeded")
    assert jobs.claim_next() == second
    jobs.fail_if_running(second, "stopped by the test")
    record = jobs.get(second)
    assert record["state"] == "failed" and record["error"] == "stopped by the test"
    jobs.fail_if_running(first, "not running: unchanged")
    assert jobs.get(first)["state"] == "succeeded" and jobs.claim_next() is None


def test_replicas_racing_to_claim_see_exactly_one_winner(open_replica: Replica, rows: list[Example]) -> None:
    stores = [open_job_store(open_replica(name)) for name in ("a", "b", "c", "d")]
    for _ in range(3):
        submit(stores[0], _request(rows))
    barrier = threading.Barrier(8)
    won: list[str | None] = []

    def claim(jobs: JobStore) -> None:
        barrier.wait(30)
        won.append(jobs.claim_next())

    threads = [threading.Thread(target=claim, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [w for w in won if w is not None]
    assert len(won) == 8 and len(winners) == 1
    assert [j["state"] for j in stores[1].list()].count("running") == 1


def test_a_job_whose_heartbeat_stops_is_reaped(open_replica: Replica, rows: list[Example]) -> None:
    a, b = open_job_store(open_replica("a")), open_job_store(open_replica("b"))
    job_id = submit(a, _request(rows))["id"]
    assert a.claim_next() == job_id
    a.beat(job_id)
    assert b.reap() == [] and b.get(job_id)["state"] == "running"
    _age_heartbeat(a, job_id, STALE_SECONDS + 5)
    assert b.reap() == [job_id]
    record = b.get(job_id)
    assert record["state"] == "failed" and record["error"] == INTERRUPTED and record["finished_at"]
    assert b.claim_next() is None  # nothing else queued


def test_a_job_whose_process_exited_on_this_host_is_reaped_at_once(
    open_replica: Replica, rows: list[Example]
) -> None:
    jobs = open_job_store(open_replica("a"))
    job_id = submit(jobs, _request(rows))["id"]
    assert jobs.claim_next() == job_id
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    jobs.update(job_id, pid=int(gone.stdout))
    jobs.beat(job_id)  # a fresh heartbeat: only the exited pid tells
    assert jobs.reap() == [job_id]
    jobs2 = submit(jobs, _request(rows))["id"]
    assert jobs.claim_next() == jobs2
    jobs.update(jobs2, pid=os.getpid())
    assert jobs.reap() == []  # alive


@pytest.mark.process
def test_a_job_reaped_while_it_runs_never_activates(open_replica: Replica, rows: list[Example]) -> None:
    store = open_replica("a")
    jobs = open_job_store(store)
    # Long enough that a heartbeat (every 2 s) finds it reaped mid-training: it stops at the next epoch.
    job_id = submit(jobs, _request(rows, options={**FAST, "epochs": 1000, "min_steps": 100_000}))["id"]
    assert jobs.claim_next() == job_id
    jobs.fail_if_running(job_id, "reaped by the test")  # as another replica does when beats stop
    job = subprocess.run(
        [sys.executable, "-m", "training.jobs", str(store.root), job_id],
        env={**os.environ, **store.child_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "reaped" in job.stderr, job.stderr[-2000:]
    assert store.active() is None and store.list_ids() == []  # stopped before storing a version
    record = jobs.get(job_id)
    assert record["state"] == "failed" and record["error"] == "reaped by the test" and not record["activated"]


def test_a_job_trains_stores_and_activates_its_version(open_replica: Replica, rows: list[Example]) -> None:
    store = open_replica("a")
    jobs = open_job_store(store)
    job_id = submit(jobs, _request(rows))["id"]
    assert jobs.claim_next() == job_id
    run_job(store, job_id)
    record = jobs.get(job_id)
    assert record["state"] == "succeeded", record["error"]
    assert record["activated"] and record["progress"] == {"epoch": 2, "epochs": 2}
    assert store.active() == record["version"] and open_replica("b").active() == record["version"]
    assert len(store.read_data(record["version"])) == len(rows)


def test_a_job_with_policy_never_stores_its_version_and_leaves_the_active_one(
    open_replica: Replica, rows: list[Example]
) -> None:
    store = open_replica("a")
    jobs = open_job_store(store)
    first = submit(jobs, _request(rows))["id"]
    assert jobs.claim_next() == first
    run_job(store, first)
    active = jobs.get(first)["version"]
    second = submit(jobs, _request(rows, activate="never"))["id"]
    assert jobs.claim_next() == second
    run_job(store, second)
    record = jobs.get(second)
    assert record["state"] == "succeeded" and not record["activated"], record
    assert record["activation_reason"] == "activation policy 'never'"
    assert store.active() == active != record["version"] and store.exists(record["version"])
