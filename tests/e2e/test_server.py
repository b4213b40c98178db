"""The real server: `intently serve` in a subprocess on a free port, real HTTP with httpx."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from model.artifact import new_version_id
from store.directory import DirectoryStore
from tests.conftest import ROOT, Server, free_port


def test_default_model_answers_and_bad_input_never_breaks_it(serve, default_store: Path) -> None:
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(default_store)})
    with httpx.Client(base_url=server.url, timeout=10) as http:
        r = http.post("/v1/classify", json={"text": "What time is it?"})
        assert r.status_code == 200 and r.json()["intent"] == "ask_time"
        texts = ["What time is it?", "set an alarm for 6 am", "play some jazz", "how do I bake bread?"]
        batch = http.post("/v1/classify/batch", json={"texts": texts}).json()["results"]
        singles = [http.post("/v1/classify", json={"text": t}).json() for t in texts]
        # Same answers. The floats may differ in the third or fourth decimal: the int8 model
        # scales activations per forward pass, so an utterance's neighbours in a batch matter.
        tolerance = 2e-3
        assert [b["intent"] for b in batch] == [s["intent"] for s in singles]
        assert all(
            abs(b["confidence"] - s["confidence"]) < tolerance for b, s in zip(batch, singles, strict=True)
        )
        for b, s in zip(batch, singles, strict=True):
            # Near-ties far down the ranking may swap places; the probabilities must agree.
            in_batch = {r["intent"]: r["confidence"] for r in b["ranking"]}
            alone = {r["intent"]: r["confidence"] for r in s["ranking"]}
            assert b["ranking"][0]["intent"] == s["ranking"][0]["intent"]
            assert all(abs(in_batch[i] - alone[i]) < tolerance for i in in_batch.keys() & alone.keys())
            assert len(in_batch.keys() & alone.keys()) >= len(alone) - 1
        parse = http.post("/model/parse", json={"text": "What time is it?"}).json()
        assert parse["intent"]["name"] == "ask_time" and parse["entities"] == []
        bad = [
            http.post("/v1/classify", json={"text": ""}),
            http.post("/v1/classify", json={"text": "x" * 1001}),
            http.post("/v1/classify/batch", json={"texts": ["a"] * 257}),
            http.post("/v1/classify", json={"text": "hi", "top_k": -1}),
            http.post("/v1/classify", content=b"{nope", headers={"content-type": "application/json"}),
            http.post("/v1/classify", json={"text": ["list"]}),
            http.post("/v1/classify", content=b"x" * 2_000_000),
        ]
        assert [b.status_code for b in bad] == [422, 422, 422, 422, 400, 422, 413]
        assert all(b.json()["message"] for b in bad)
        assert http.post("/v1/classify", json={"text": "What time is it?"}).json()["intent"] == "ask_time"
        assert http.get("/readyz").json()["ready"] is True


def test_a_worker_takes_connections_only_once_its_model_is_loaded(serve, default_store: Path) -> None:
    """The lifespan loads the model before uvicorn opens the socket (app/model_holder.py), so a
    normal start shows no 503 at all: connections are refused, then the first answer is a 200."""
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(default_store)}, ready=False)
    refused, deadline = 0, time.monotonic() + 120
    while True:
        try:
            first = httpx.get(f"{server.url}/readyz", timeout=10)
            break
        except httpx.TransportError:
            refused += 1
            assert time.monotonic() < deadline and server.proc.poll() is None, server.output()
            time.sleep(0.01)
    assert refused > 0 and first.status_code == 200 and first.json()["ready"] is True


def test_readyz_is_503_until_a_loadable_model_is_active(serve, default_store: Path) -> None:
    """The one way a running worker has no model: the active version cannot be loaded and there is
    no earlier one to fall back on. It answers 503 until a loadable version is activated."""
    store = DirectoryStore(default_store)
    good = store.active()
    assert good is not None
    missing = new_version_id()  # a pointer to files that are not there (a half-copied store)
    (default_store / "active.json").write_text(json.dumps({"version": missing, "history": []}))
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(default_store)}, ready=False)
    deadline = time.monotonic() + 120
    while True:
        try:
            not_ready = httpx.get(f"{server.url}/readyz", timeout=10)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline and server.proc.poll() is None, server.output()
            time.sleep(0.05)
    assert not_ready.status_code == 503
    assert not_ready.json()["ready"] is False and missing in not_ready.json()["reason"]
    r = httpx.post(f"{server.url}/v1/classify", json={"text": "What time is it?"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"] == "model_not_ready" and r.headers["retry-after"]

    store.activate(good)  # what `intently models activate` does; the worker's watcher picks it up
    seen: list[int] = []
    while not seen or seen[-1] != 200:
        assert time.monotonic() < deadline, seen
        seen.append(httpx.get(f"{server.url}/readyz", timeout=10).status_code)
        time.sleep(0.05)
    assert set(seen[:-1]) <= {503}
    assert httpx.get(f"{server.url}/readyz", timeout=10).json()["model_version"] == good
    r = httpx.post(f"{server.url}/v1/classify", json={"text": "What time is it?"}, timeout=10)
    assert r.status_code == 200 and r.json()["model_version"] == good


def test_metrics_count_requests_across_two_workers(serve, default_store: Path) -> None:
    server: Server = serve("--workers", "2", env={"INTENTLY_MODEL_STORE": str(default_store)})
    # Fresh connections until both workers have answered: /metrics, answered by one of them,
    # counts every request only if it merges the other's samples too.
    answers = server.ask_every_worker(2, texts=["What time is it?"])
    assert len({worker for worker, _ in answers}) == 2
    assert {answer["intent"] for _, answer in answers} == {"ask_time"}
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    count = re.search(
        r'intently_http_requests_total\{method="POST",route="/v1/classify",status="200"\} (\S+)', text
    )
    assert count and float(count.group(1)) == len(answers)
    predicted = re.search(r'intently_predictions_total\{intent="ask_time"\} (\S+)', text)
    assert predicted and float(predicted.group(1)) == len(answers)


def _serve_exit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.server
def test_missing_or_corrupt_model_stops_startup_with_one_line(tmp_path: Path) -> None:
    proc = _serve_exit("--model", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "model directory not found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text('{"format": "intently-model", "format_version": 1}')
    proc = _serve_exit("--model", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "invalid" in proc.stderr and "Traceback" not in proc.stderr


def test_a_model_with_entities_answers_them_in_both_apis(serve, tagged_model_dir: Path) -> None:
    server: Server = serve("--model", str(tagged_model_dir))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        parse = http.post("/model/parse", json={"text": "Set an alarm for 8:15", "message_id": "m1"}).json()
        assert parse["intent"]["name"] == "set_alarm"
        (entity,) = parse["entities"]
        assert {k: entity[k] for k in ("entity", "value", "start", "end", "extractor")} == {
            "entity": "time",
            "value": "8:15",
            "start": 17,
            "end": 21,
            "extractor": "IntentlyTagger",
        }
        assert 0 < entity["confidence_entity"] <= 1
        answer = http.post("/v1/classify", json={"text": "is it raining in  Berlin"}).json()
        assert [(e["entity"], e["value"], e["start"], e["end"]) for e in answer["entities"]] == [
            ("city", "Berlin", 18, 24)
        ]
        batch = http.post("/v1/classify/batch", json={"texts": ["hello", "alarm at noon please"]}).json()
        assert [[e["value"] for e in r["entities"]] for r in batch["results"]] == [[], ["noon"]]


def test_a_first_start_trains_the_built_in_model_in_another_process(serve, tmp_path: Path) -> None:
    """On an empty store `serve` trains the built-in model in a child process: the process that
    then serves never loads torch (issue 30: a serving worker's memory, also after a first start).
    A small stand-in for the built-in data keeps the training short."""
    data = tmp_path / "built-in.csv"
    rows = {
        "ask_time": ["what time is it", "tell me the time", "what's the time now", "time please"],
        "greet": ["hello", "hi there", "good morning", "hey"],
        "weather": ["is it raining", "weather today", "will it be sunny", "forecast please"],
    }
    data.write_text("text,intent\n" + "".join(f"{t},{i}\n" for i, ts in rows.items() for t in ts))
    store = tmp_path / "store"
    server = serve(env={"INTENTLY_MODEL_STORE": str(store), "INTENTLY_DEFAULT_DATA": str(data)})
    assert DirectoryStore(store).active() is not None
    answer = httpx.post(f"{server.url}/v1/classify", json={"text": "what time is it now"}).json()
    assert answer["ranking"][0]["intent"] == "ask_time"
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if not maps.exists():
        pytest.skip("no /proc here to read the server's loaded libraries from")
    assert "libtorch" not in maps.read_text()
    assert server.log_path is not None
    assert "training the built-in default model" in server.log_path.read_text(errors="replace")
