"""Trainers say they are alive in the job store, on both backends, so that a job queued where none
is says so in its record instead of waiting silently (docs/api.md, `message`)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

import store.jobs
from store.database import MIGRATIONS
from store.jobs import JobRequest, open_job_store, trainer_id
from store.model_store import ModelStore
from store.postgres import PostgresStore
from tests.conftest import NO_PRETRAINED
from training.dispatcher import JobDispatcher
from training.job_request import submit
from training.readers import Example

Replica = Callable[[str], ModelStore]
FAST = {"epochs": 2, "min_steps": 0, "embed_dim": 16, "hidden_dim": 16, "ngram_buckets": 500, **NO_PRETRAINED}


def _queue(replica: ModelStore, rows: list[Example]) -> str:
    request = JobRequest(rows, mode="replace", activate="never", options=FAST)
    return str(submit(open_job_store(replica), request)["id"])


def test_a_job_queued_where_no_trainer_was_ever_seen_says_so(
    open_replica: Replica, assistant_intents: list[Example]
) -> None:
    jobs = open_job_store(open_replica("a"))
    job_id = _queue(open_replica("a"), assistant_intents[:60])
    record = jobs.get(job_id)
    assert record["state"] == "queued"
    assert record["message"].startswith("waiting for a trainer: none has ever been seen")
    assert "intently[train]" in record["message"]
    assert jobs.list()[0]["message"] == record["message"]


def test_a_live_trainer_on_another_replica_is_seen_and_a_stopped_one_is_not(
    open_replica: Replica, assistant_intents: list[Example], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica, trainer = open_job_store(open_replica("a")), open_job_store(open_replica("b"))
    job_id = _queue(open_replica("a"), assistant_intents[:60])
    trainer.trainer_beat("other-host/ns/123", "worker")
    assert replica.trainers().alive == 1
    assert replica.get(job_id)["message"].startswith("queued: 1 trainer(s) alive")
    # Not heard from within STALE_SECONDS: gone, though it never said it stopped.
    monkeypatch.setattr(store.jobs, "STALE_SECONDS", -1.0)
    message = replica.get(job_id)["message"]
    assert message.startswith("waiting for a trainer: none has been seen for 0 s"), message
    monkeypatch.undo()
    trainer.trainer_beat("other-host/ns/123", "worker", stopped=True)
    assert replica.trainers().alive == 0
    assert replica.get(job_id)["message"].startswith("waiting for a trainer: none has been seen for")


def test_a_running_or_finished_job_carries_no_waiting_message(
    open_replica: Replica, assistant_intents: list[Example]
) -> None:
    jobs = open_job_store(open_replica("a"))
    job_id = _queue(open_replica("a"), assistant_intents[:60])
    assert jobs.claim_next() == job_id
    assert jobs.get(job_id)["message"] is None


def test_a_dispatcher_beats_as_a_trainer_and_says_when_it_stops(open_replica: Replica) -> None:
    replica = open_replica("a")
    jobs = open_job_store(replica)

    async def run() -> int:
        stop = asyncio.Event()
        dispatcher = JobDispatcher(replica, interval=0.05, kind="worker")
        task = asyncio.create_task(dispatcher.run_until(stop))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if jobs.trainers().alive:
                break
        alive = jobs.trainers().alive
        stop.set()
        await task
        return alive

    assert asyncio.run(run()) == 1
    assert jobs.trainers().alive == 0
    assert jobs.trainers().last_seen_age is not None
    assert trainer_id().endswith(f"/{os.getpid()}")


def test_a_dispatcher_stopped_while_it_claims_fails_the_job_it_took(
    open_replica: Replica, assistant_intents: list[Example]
) -> None:
    """SIGTERM can land while the store is claiming a job (in a thread): the claim still commits,
    and the job, which no process will run, must not stay `running` until a reaper notices."""
    replica = open_replica("a")
    jobs = open_job_store(replica)
    job_id = _queue(replica, assistant_intents[:60])

    async def run() -> None:
        dispatcher = JobDispatcher(replica, interval=0.05, kind="worker")
        claiming, claim = threading.Event(), dispatcher.jobs.claim_next

        def slow_claim() -> str | None:
            claiming.set()
            time.sleep(0.5)  # the store's transaction, slow enough for the stop to come first
            return claim()

        dispatcher.jobs.claim_next = slow_claim  # type: ignore[method-assign]
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run_until(stop))
        while not claiming.is_set():
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(run())
    record = jobs.get(job_id)
    assert record["state"] == "failed", record
    assert record["error"] == "trainer shut down during training"


def test_a_database_of_the_first_schema_is_migrated_with_its_jobs_kept(
    database_url: str, tmp_path: Path
) -> None:
    """Migration 2 (the trainers' table) is appended: a database that a release before it made keeps
    its queued jobs, and they say no trainer was ever seen."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE intently_schema (version integer NOT NULL)")
        conn.execute(MIGRATIONS[0])
        conn.execute("INSERT INTO intently_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO intently_jobs (id, state, mode, activate, options, examples, data, created_at)"
            " VALUES ('old1', 'queued', 'replace', 'never', '{}', 1, '', '2026-12-01T00:00:00+00:00')"
        )
    store = PostgresStore(database_url, tmp_path / "cache")
    try:
        jobs = open_job_store(store)
        record = jobs.get("old1")
        assert record["message"].startswith("waiting for a trainer: none has ever been seen")
        with store.db.connection() as conn:
            row = conn.execute("SELECT max(version) FROM intently_schema").fetchone()
        assert row is not None and row[0] == len(MIGRATIONS) == 3
    finally:
        store.close()
