"""Retraining and the model lifecycle against real server processes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from store.directory import DirectoryStore
from tests.conftest import ASSISTANT, NEW_INTENT, NO_PRETRAINED, Server, clone_version

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The built-in model starts from the shipped encoder: so does the job, or it would be judged against
# a better-read model than it could be (vectors and the teacher stay off: they load a sentence encoder).
FAST = {"epochs": 20, "min_steps": 0, **NO_PRETRAINED, "encoder": "auto"}
# Requests for `order_food` that share no sentence with NEW_INTENT, what the model trains on.
NEW_INTENT_UNSEEN = [
    "could you order me a pizza tonight",
    "please get some sushi delivered",
    "i would like a burger delivered",
    "order some takeout for lunch",
    "can i get food delivered to my house",
    "order me some thai food",
    "get me dinner delivered",
    "i want to order pizza",
    "deliver some noodles to my place",
    "order chinese food please",
]


def _env(store: Path) -> dict[str, str]:
    return {"INTENTLY_MODEL_STORE": str(store), "INTENTLY_ADMIN_TOKEN": TOKEN}


def _wait_job(http: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/training-jobs/{job_id}", headers=AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job)


def _run_job(http: httpx.Client, examples: list[dict[str, str]], **fields: object) -> dict:
    """Queue a job of these examples (JSON), see it queued, and wait for its end."""
    r = http.post("/v1/training-jobs", headers=AUTH, json={"examples": examples, **fields})
    assert r.status_code == 202 and r.json()["state"] == "queued", r.text
    return _wait_job(http, r.json()["id"])


def test_append_a_new_intent_reaches_every_worker(serve, default_store: Path) -> None:
    server: Server = serve("--workers", "2", env=_env(default_store))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        before = http.get("/v1/models", headers=AUTH).json()["active"]
        examples = [{"text": t, "intent": "order_food"} for t in NEW_INTENT]
        job = _run_job(http, examples, mode="append", activate="always", options=FAST)
    assert job["state"] == "succeeded", job["error"]
    assert job["activated"] and job["version"] != before and job["progress"]["epoch"] >= 1
    # Validated on the rows the active version held out (and a share of the new ones): what it
    # knew, it still knows, within a few of its 168 held-out rows.
    base_accuracy = DirectoryStore(default_store).meta(before).metrics["accuracy"]
    assert job["metrics"]["validation"]["accuracy"] >= base_accuracy - 0.03, (job["metrics"], base_accuracy)
    # Every worker takes the new version (within a reload interval when the machine is idle; the
    # timing is not this test's to judge): ask until each of the two has answered with it.
    server.ask_every_worker(2, until=lambda answer: answer["model_version"] == job["version"])
    # Requests for the new intent in words of their own, none of them a training sentence.
    answers = [httpx.post(f"{server.url}/v1/classify", json={"text": t}).json() for t in NEW_INTENT_UNSEEN]
    assert {answer["model_version"] for answer in answers} == {job["version"]}
    intents = [answer["intent"] for answer in answers]
    assert intents.count("order_food") >= 0.8 * len(answers), intents
    assert httpx.get(f"{server.url}/v1/intents").json()["model_version"] == job["version"]


def test_no_request_fails_through_activation_and_rollback(serve, default_store: Path) -> None:
    store = DirectoryStore(default_store)
    first = store.active()
    # A second version to switch to: the same model under a new id is enough here (a job that
    # succeeds without activating, policy `never`, is tested in tests/training/test_job_store.py).
    second = clone_version(store, first or "")
    server: Server = serve("--workers", "2", env=_env(default_store))

    errors: list[str] = []
    served: list[int] = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/classify", json={"text": "What time is it?"})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                    served[0] += 1
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=server.url, timeout=120, headers=AUTH) as admin:
            for _ in range(3):
                time.sleep(0.7)
                assert admin.post(f"/v1/models/{second}/activate").json() == {"active": second}
                time.sleep(0.7)
                assert admin.post("/v1/models/rollback").json() == {"active": first}
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and served[0] > 100
    assert store.active() == first


def test_sigkill_during_training_leaves_the_store_consistent(
    serve, default_store: Path, tmp_path: Path
) -> None:
    store = DirectoryStore(default_store)
    active, versions = store.active(), store.list_ids()
    server: Server = serve(env=_env(default_store))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        job_id = http.post(
            "/v1/training-jobs",
            headers=AUTH,
            files={"file": ("train.csv", (ASSISTANT / "train.csv").read_bytes(), "text/csv")},
            data={
                "mode": "replace",
                "activate": "always",
                "options": json.dumps({"epochs": 30, "patience": 30, **NO_PRETRAINED}),
            },
        ).json()["id"]
        deadline = time.monotonic() + 120
        while http.get(f"/v1/training-jobs/{job_id}", headers=AUTH).json()["progress"]["epoch"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    os.kill(server.proc.pid, signal.SIGKILL)  # the server only: its job must die with it
    server.proc.wait(10)
    time.sleep(1.0)
    assert store.active() == active and store.list_ids() == versions

    restarted: Server = serve(env=_env(default_store))
    with httpx.Client(base_url=restarted.url, timeout=30) as http:
        deadline = time.monotonic() + 60
        while (job := http.get(f"/v1/training-jobs/{job_id}", headers=AUTH).json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert job["state"] == "failed" and "interrupted" in job["error"]
        assert http.get("/v1/models", headers=AUTH).json()["active"] == active
        assert http.post("/v1/classify", json={"text": "What time is it?"}).json()["model_version"] == active
    assert store.list_ids() == versions


def test_if_better_refuses_a_model_trained_on_mislabelled_data(serve, default_store: Path) -> None:
    import csv

    with open(ASSISTANT / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    intents = sorted({r["intent"] for r in rows})
    shifted = {a: b for a, b in zip(intents, intents[1:] + intents[:1], strict=True)}
    wrong = [{"text": r["text"], "intent": shifted[r["intent"]]} for r in rows]
    server: Server = serve(env=_env(default_store))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        active = http.get("/v1/models", headers=AUTH).json()["active"]
        # A few epochs are enough to learn wrong labels; more would only cost time.
        job = _run_job(http, wrong, mode="replace", activate="if_better", options={**FAST, "epochs": 3})
        assert job["state"] == "succeeded" and job["activated"] is False
        assert "not activated" in job["activation_reason"]
        cmp = job["metrics"]["comparison"]
        assert cmp["new_accuracy"] < cmp["active_accuracy"]
        assert http.get("/v1/models", headers=AUTH).json()["active"] == active


def test_admin_endpoints_need_the_token(serve, default_store: Path) -> None:
    off: Server = serve(env={"INTENTLY_MODEL_STORE": str(default_store)})
    r = httpx.get(f"{off.url}/v1/models", headers=AUTH)
    assert r.status_code == 403 and "INTENTLY_ADMIN_TOKEN" in r.json()["message"]
    on: Server = serve(env=_env(default_store))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path in (
            ("GET", "/v1/models"),
            ("POST", "/v1/models/rollback"),
            ("GET", "/v1/training-jobs"),
            ("POST", "/v1/training-jobs"),
        ):
            r = httpx.request(method, f"{on.url}{path}", headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            assert TOKEN not in r.text
    assert httpx.post(f"{on.url}/v1/classify", json={"text": "hi"}).status_code == 200


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"examples": [], "mode": "append"}, 422, "examples"),
        ({"examples": [{"text": "x", "intent": "a"}], "mode": "merge"}, 422, "mode"),
        ({"examples": [{"text": "x", "intent": "a"}], "options": {"epochz": 3}}, 422, "epochz"),
        (
            {"examples": [{"text": "x", "intent": "a"}, {"text": "y", "intent": "b"}], "mode": "replace"},
            422,
            "at least 2 examples",
        ),
    ],
)
def test_bad_jobs_are_refused_at_once(
    serve, default_store: Path, body: dict, status: int, message: str
) -> None:
    server: Server = serve(env=_env(default_store))
    r = httpx.post(f"{server.url}/v1/training-jobs", headers=AUTH, json=body)
    assert r.status_code == status and message in r.json()["message"], r.text
