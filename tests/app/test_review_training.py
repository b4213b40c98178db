"""From the review inbox to a model: its export trains with `intently train`, and a training job
with `from_review: true` appends the labelled items and marks them used once activated."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model.predictor import Predictor
from store.directory import DirectoryStore
from tests.app.test_review import AUTH, NONSENSE, _settings
from tests.conftest import NEW_INTENT, ROOT, SMALL, ready_client

TIME = ["what time is it", "tell me the time please", "what's the time now", "time please"]
UNLABELLED = ["can you book me a flight to rome", "is the pharmacy open on sundays"]
CLI_SMALL = [
    "--embed-dim", "32", "--hidden-dim", "32", "--ngram-buckets", "2000", "--bag-buckets", "5000",
    "--epochs", "3", "--min-steps", "0", "--no-vectors", "--no-encoder", "--no-teacher", "--seed", "0",
]  # fmt: skip


def _label_all(client: TestClient, texts: list[str], labels: dict[str, str]) -> None:
    client.post("/v1/classify/batch", json={"texts": texts})
    client.app.state.review.flush()  # type: ignore[attr-defined]
    items = client.get("/v1/review?limit=500", headers=AUTH).json()["items"]
    changes = [{"id": i["id"], "label": labels[i["text"]]} for i in items if i["text"] in labels]
    assert client.post("/v1/review/labels", json={"items": changes}, headers=AUTH).json()["updated"] == len(
        labels
    )


@pytest.mark.own_training
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "yaml"])
def test_the_export_trains_with_intently_train(small_store: Path, tmp_path: Path, fmt: str) -> None:
    labels = {
        **dict.fromkeys(NEW_INTENT, "order_food"),
        **dict.fromkeys(TIME, "ask_time"),
        **dict.fromkeys([NONSENSE, "purple monkey dishwasher"], "oos"),
    }
    for client in ready_client(_settings(small_store, review_sample_rate=1.0)):
        _label_all(client, list(labels), labels)
        exported = client.get(f"/v1/review/export?format={fmt}", headers=AUTH)
    data = tmp_path / f"review.{fmt}"
    data.write_bytes(exported.content)
    out = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", str(data), "--out", str(out), "--quiet", *CLI_SMALL],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = Predictor.load(out).meta
    assert set(meta.labels) == {"order_food", "ask_time", "oos"}
    assert meta.data["examples"] == len(labels)


@pytest.mark.own_training
def test_a_from_review_job_appends_the_labels_and_marks_them_used(small_store: Path) -> None:
    labels = {**dict.fromkeys(NEW_INTENT, "order_food"), NONSENSE: "oos"}
    base = DirectoryStore(small_store).active()
    for client in ready_client(_settings(small_store, review_sample_rate=1.0)):
        # Refused: not append, or nothing labelled yet.
        job = {"mode": "append", "activate": "always", "options": {**SMALL, "from_review": True}}
        r = client.post("/v1/training-jobs", json={**job, "mode": "replace"}, headers=AUTH)
        assert r.status_code == 422 and "append" in r.json()["message"]
        r = client.post("/v1/training-jobs", json=job, headers=AUTH)
        assert r.status_code == 422 and "no labelled items" in r.json()["message"]

        _label_all(client, [*labels, *UNLABELLED], labels)
        r = client.post("/v1/training-jobs", json=job, headers=AUTH)
        assert r.status_code == 202, r.text
        assert r.json()["examples"] == len(labels) and "from_review" not in r.json()["options"]
        deadline = time.monotonic() + 600
        while (done := client.get(f"/v1/training-jobs/{r.json()['id']}", headers=AUTH).json())["state"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, done
            time.sleep(0.5)
        assert done["state"] == "succeeded" and done["activated"], done
        version = done["version"]

        used = client.get("/v1/review?status=used&limit=500", headers=AUTH).json()["items"]
        assert {i["text"] for i in used} == set(labels) and {i["used_in"] for i in used} == {version}
        assert client.get("/v1/review?status=labelled", headers=AUTH).json()["items"] == []
        r = client.post("/v1/training-jobs", json=job, headers=AUTH)  # all used: nothing new to train on
        assert r.status_code == 422 and "no labelled items" in r.json()["message"]

    store = DirectoryStore(small_store)
    assert store.active() == version != base
    rows = {(r["text"], r["intent"]) for r in store.read_data(version)}
    assert set(labels.items()) <= rows
    # The inbox's unlabelled texts were offered to distillation (unused here: no teacher at this size).
    assert Predictor.load(store.path(version)).meta.training["review_unlabelled"] == len(UNLABELLED)
    answers = Predictor.load(store.path(version)).predict_batch(NEW_INTENT)
    assert sum(a.intent == "order_food" for a in answers) >= len(NEW_INTENT) // 2


def test_from_review_with_the_inbox_off_says_so(small_store: Path) -> None:
    for client in ready_client(_settings(small_store, review=False)):
        r = client.post("/v1/training-jobs", json={"mode": "append", "from_review": True}, headers=AUTH)
        assert r.status_code == 409 and r.json()["error"] == "review_disabled"
        r = client.post("/v1/training-jobs", json={"mode": "append"}, headers=AUTH)
        assert r.status_code == 422  # no examples and no from_review: still refused
