"""Malformed training files, through the command line and through the HTTP upload.

Each gets a clear one-line error naming the problem; none trains, writes a
model, queues a job or disturbs the server.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.cli import main
from store.directory import DirectoryStore
from tests.conftest import ROOT, Server
from tests.reliability.conftest import AUTH, TOKEN

_rng = random.Random(7)
GARBAGE = bytes(_rng.randrange(256) for _ in range(8192))
BILLION_LAUGHS = (
    b'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    b"b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    b"nlu: [*g]\n"
)
ANCHORED_RASA = (
    b"nlu:\n- intent: greet\n  examples: &ex |\n    - hi\n    - hello\n- intent: bye\n  examples: *ex\n"
)

# (file name, content, what the message must say)
BAD_FILES = [
    ("garbage.csv", GARBAGE, "NUL bytes"),
    ("garbage.yml", GARBAGE.replace(b"\x00", b"\x01"), "not valid UTF-8"),
    ("latin1.csv", "text,intent\ncafé au lait,order\n".encode("latin-1"), "latin1.csv:2: not valid UTF-8"),
    ("utf16.csv", "text,intent\nhi,greet\n".encode("utf-16"), "UTF-16"),
    ("bomb.yml", BILLION_LAUGHS, "anchors and aliases are not allowed"),
    ("anchors.yml", ANCHORED_RASA, "anchors.yml:7: YAML anchors and aliases are not allowed"),
    ("deep.yml", b"nlu: " + b"[" * 50_000, "YAML nested too deeply"),
    ("python.yml", b"nlu: !!python/object/apply:os.system ['touch pwned']\n", "not valid YAML"),
    ("deep.jsonl", b"[" * 50_000 + b"]" * 50_000 + b"\n", "deep.jsonl:1: JSON nested too deeply"),
    ("surrogate.jsonl", b'{"text": "\\ud800", "intent": "greet"}\n', "lone surrogate"),
    ("nul.csv", b"text,intent\nhel\x00lo,greet\n", "NUL bytes"),
    ("newlines.csv", b'text,intent\n"never closed,greet\nhi,bye\n', "empty intent"),
    ("columns.csv", b"text,intent\nhi, there,greet\n", "columns.csv:2: more fields"),
    ("long-line.csv", b"text,intent\n" + b"a" * 1_000_000 + b",greet\n", "malformed CSV: field larger"),
    ("long-line.jsonl", json.dumps({"text": "a" * 2_000_000, "intent": "x"}).encode(), "longer than 10000"),
]
IDS = [name for name, _, _ in BAD_FILES]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=IDS)
def test_cli_train_refuses_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code = main(["train", str(path), "--out", str(tmp_path / "model"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("intently train: error: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "model").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.process
def test_cli_train_on_a_100_mb_single_line(tmp_path: Path) -> None:
    """The real console command on a 100 MB line: one clear line, exit 2, no model."""
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "' + b"x" * (100 * 2**20) + b'", "intent": "greet"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", str(path), "--out", str(tmp_path / "model"), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == f"intently train: error: {path}:1: text is longer than 10000 characters"
    assert not (tmp_path / "model").exists()


def test_http_upload_refuses_every_bad_file_and_the_server_keeps_serving(serve, tiny_store: Path) -> None:
    store = DirectoryStore(tiny_store)
    versions = store.list_ids()
    server: Server = serve(
        env={
            "INTENTLY_MODEL_STORE": str(tiny_store),
            "INTENTLY_ADMIN_TOKEN": TOKEN,
            "INTENTLY_MAX_UPLOAD_BYTES": str(4 * 2**20),
        }
    )
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        for name, content, message in BAD_FILES:
            r = http.post("/v1/training-jobs", files={"file": (name, content)}, data={"mode": "replace"})
            assert r.status_code == 422, (name, r.status_code, r.text[:300])
            body = r.json()
            assert body["error"] == "invalid_data" and message in body["message"], (name, body)
            assert http.post("/v1/classify", json={"text": "hello"}).status_code == 200
        # Over the upload limit: refused from Content-Length, before the body is read ...
        big = b"text,intent\n" + b"a" * (5 * 2**20)
        r = http.post("/v1/training-jobs", files={"file": ("big.csv", big)})
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"

        # ... and without one (chunked), after 4 MiB have arrived.
        def chunks():  # 100 MB if the server read it all
            boundary = b"--b0undary\r\n"
            yield boundary + b'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
            for _ in range(100):
                yield b"a" * 2**20

        r = http.post(
            "/v1/training-jobs",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
        assert http.get("/v1/training-jobs").json() == {"jobs": []}
        assert http.get("/readyz").json()["ready"] is True
    assert server.proc.poll() is None and store.list_ids() == versions
