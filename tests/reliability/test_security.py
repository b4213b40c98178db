"""Security: hostile model files, path traversal, the admin token, CORS.

The in-process pickle test lives in tests/model/test_artifact.py; here the
same attack goes through the real server (startup and activation), together
with tensor files whose headers lie about their size. That every admin route is off without a
token, and guarded with one, is held in tests/app/test_admin_token.py (it walks every route).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app import admin
from app.config import Settings
from app.main import create_app
from model.artifact import WEIGHTS_FILE, load
from store.directory import DirectoryStore
from tests.conftest import NO_PRETRAINED, ROOT, Server, clone_version, free_port, private_copy
from tests.reliability.conftest import AUTH, TOKEN

INTENTLY = str(Path(sys.executable).parent / "intently")


class _Exploit:
    """Unpickling this runs `touch MARKER`: if the marker exists, something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _plant_pickles(model_dir: Path, root: Path, marker: Path) -> dict[str, Path]:
    """Model directories whose weights are pickles: a plain one, and torch.save's zip format."""
    out = {}
    d = Path(shutil.copytree(model_dir, root / "pickle"))
    (d / WEIGHTS_FILE).write_bytes(pickle.dumps(_Exploit(marker)))
    out["pickle"] = d
    d = Path(shutil.copytree(model_dir, root / "torch-save"))
    torch.save({"weights": _Exploit(marker)}, d / WEIGHTS_FILE)
    out["torch-save"] = d
    return out


@pytest.mark.process
def test_pickled_weights_stop_serve_without_running_code(small_model_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    dirs = _plant_pickles(small_model_dir, tmp_path, marker)
    procs = [
        subprocess.Popen(
            [INTENTLY, "serve", "--model", str(d), "--port", str(free_port())],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        for d in dirs.values()
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "not a readable safetensors file" in err, err
    assert not marker.exists()


def _lying_headers(model_dir: Path, root: Path) -> dict[str, Path]:
    """safetensors files whose headers claim tensors far larger than the file (or than any memory)."""
    load(model_dir)  # the template itself is fine

    def header_file(name: str, header: bytes) -> Path:
        d = Path(shutil.copytree(model_dir, root / name))
        (d / WEIGHTS_FILE).write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
        return d

    real = model_dir / WEIGHTS_FILE
    with open(real, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    first = next(k for k in header if k != "__metadata__")
    out = {}
    # 1. The right tensor names, each claiming 2^31 x 2^31 floats (16 EiB) over the file's few bytes.
    huge = {k: {"dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 2**64 - 1]} for k in header}
    huge.pop("__metadata__", None)
    out["absurd-shapes"] = header_file("absurd-shapes", json.dumps(huge).encode())
    # 2. Shapes consistent with the offsets, 4 GiB of them, and a file of a few hundred bytes.
    big = {first: {"dtype": "F32", "shape": [2**15, 2**15], "data_offsets": [0, 2**32]}}
    out["4gib-claimed"] = header_file("4gib-claimed", json.dumps(big).encode())
    # 3. A header length prefix of 2^62 bytes.
    d = Path(shutil.copytree(model_dir, root / "huge-prefix"))
    (d / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**62) + b"{}")
    out["huge-prefix"] = d
    # 4. Right names, plausible-looking but wrong shapes, real data: refused before any tensor is read.
    d = Path(shutil.copytree(model_dir, root / "wrong-shapes"))
    save_file({k: torch.zeros(3, 3) for k in huge}, str(d / WEIGHTS_FILE))
    out["wrong-shapes"] = d
    return out


@pytest.mark.process
def test_tensor_headers_that_lie_are_refused_without_exhausting_memory(
    small_model_dir: Path, tmp_path: Path
) -> None:
    cases = _lying_headers(small_model_dir, tmp_path)
    # In a child process, so its peak memory is its own and a runaway allocation cannot hurt the suite.
    script = (
        "import json, sys\n"
        "from model.artifact import ArtifactError, load\n"
        "from tests.peak_memory import peak_growth_mb\n"
        "def attempt(path):\n"
        "    try:\n"
        "        load(path)\n"
        "    except ArtifactError as exc:\n"
        "        return str(exc)\n"
        "for name, path in json.loads(sys.argv[1]).items():\n"
        "    error, grew_mb = peak_growth_mb(lambda: attempt(path))\n"
        "    print(json.dumps({'case': name, 'error': error, 'grew_mb': grew_mb}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps({k: str(v) for k, v in cases.items()})],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,  # a hang guard; how fast a refusal is is not this test's to judge
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = {r["case"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert set(results) == set(cases)
    for name, r in results.items():
        assert r["error"], f"{name} was loaded"
        # Each claims 4 GiB or more; refused, it allocates about what the real model is.
        assert r["grew_mb"] is None or r["grew_mb"] < 512, r
    assert "does not match model.json" in results["wrong-shapes"]["error"]
    print(f"\nlying tensor headers: {json.dumps(results)}")


def test_activating_a_pickled_version_is_refused_and_runs_nothing(
    serve, tiny_store: Path, tmp_path: Path
) -> None:
    store = DirectoryStore(tiny_store)
    good = store.active()
    assert good is not None
    marker = tmp_path / "pwned"
    hostile = clone_version(store, good)
    (store.path(hostile) / WEIGHTS_FILE).write_bytes(pickle.dumps(_Exploit(marker)))
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(tiny_store), "INTENTLY_ADMIN_TOKEN": TOKEN})
    r = httpx.post(f"{server.url}/v1/models/{hostile}/activate", headers=AUTH, timeout=30)
    assert r.status_code == 409 and "damaged" in r.json()["message"]
    assert httpx.get(f"{server.url}/v1/models", headers=AUTH).json()["active"] == good
    assert httpx.post(f"{server.url}/v1/classify", json={"text": "hello"}).json()["model_version"] == good
    assert not marker.exists()


# --- path traversal ----------------------------------------------------------------------------


def _raw(port: int, method: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with the target exactly as written: HTTP clients would normalise `..` away."""
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Length: 0",
        "Connection: close",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


TRAVERSALS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    "..%2f..%2fvictim",
    "..%2F..%2Fvictim",
    "%2e%2e%2f%2e%2e%2fvictim",
    "..%5c..%5cvictim",
    "....//....//victim",
    "..%00",
    "%00",
    ".hidden",
    "%252e%252e%252fvictim",  # double-encoded
]


def _snapshot(root: Path) -> list[str]:
    """Every file and folder, less the lock and the job database (its -wal/-shm come and go)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.name != ".lock" and not p.name.startswith("jobs.sqlite3")
    )


def test_no_path_traversal_through_version_or_job_ids(serve, tiny_store: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"  # a sibling of the store, and a model directory worth deleting
    shutil.copytree(tiny_store / "versions" / DirectoryStore(tiny_store).active(), victim)  # type: ignore[operator]
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(tiny_store), "INTENTLY_ADMIN_TOKEN": TOKEN})
    auth = {"Authorization": AUTH["Authorization"]}
    before_store, before_victim = _snapshot(tiny_store), _snapshot(victim)
    statuses = set()
    for attack in TRAVERSALS:
        for method, target in (
            ("POST", f"/v1/models/{attack}/activate"),
            ("DELETE", f"/v1/models/{attack}"),
            ("DELETE", f"/v1/models/{attack}/"),
            ("GET", f"/v1/training-jobs/{attack}"),
            ("POST", f"/v1/models/..%2f..%2f{attack}/activate"),
        ):
            status, raw = _raw(server.port, method, target, auth)
            statuses.add(status)
            # Refused, or (a trailing slash) redirected to the same id without it, which is refused.
            assert status in (400, 404, 405, 422, 307), (method, target, raw[:300])
    assert _snapshot(tiny_store) == before_store and _snapshot(victim) == before_victim
    assert httpx.post(f"{server.url}/v1/classify", json={"text": "hello"}).status_code == 200
    assert 422 in statuses and 404 in statuses  # both guards met: the id check and the router


UPLOAD_NAMES = ["../../../evil.csv", "..\\..\\evil.csv", "/tmp/evil.csv", "a/../../evil.csv", "C:\\evil.csv"]


def test_upload_file_names_never_become_paths(serve, tiny_store: Path, tmp_path: Path) -> None:
    server: Server = serve(env={"INTENTLY_MODEL_STORE": str(tiny_store), "INTENTLY_ADMIN_TOKEN": TOKEN})
    data = b"text,intent\nbook a table,restaurant\nreserve dinner,restaurant\n"
    for filename in UPLOAD_NAMES:
        r = httpx.post(
            f"{server.url}/v1/training-jobs",
            headers=AUTH,
            files={"file": (filename, data)},
            data={
                "mode": "append",
                "activate": "never",
                "options": json.dumps({"epochs": 1, "min_steps": 0, **NO_PRETRAINED}),
            },
            timeout=30,
        )
        assert r.status_code == 202, (filename, r.text)
        job_dir = tiny_store / "jobs" / r.json()["id"]
        assert [p.name for p in job_dir.iterdir() if p.name != "job.log"] == ["examples.jsonl"]
        # A bad file is named by its base name only in the error.
        r = httpx.post(
            f"{server.url}/v1/training-jobs", headers=AUTH, files={"file": (filename, b"\x00")}, timeout=30
        )
        assert r.status_code == 422 and r.json()["message"].startswith("evil.csv: "), (filename, r.text)
    for place in (tmp_path, tiny_store.parent, Path("/tmp"), ROOT, tiny_store, tiny_store / "jobs"):
        assert not (place / "evil.csv").exists()


# --- the admin token and the admin API -------------------------------------------------------


@pytest.fixture(scope="module")
def admin_on(tiny_store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app on a store of its own for this module, the admin API on: for requests it refuses."""
    store = private_copy(tiny_store_template, tmp_path_factory.mktemp("admin-on") / "store")
    with TestClient(create_app(Settings(model_store=store, admin_token=TOKEN))) as client:
        yield client


@pytest.fixture(scope="module")
def admin_off(small_model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=small_model_dir))) as client:
        yield client


def test_admin_token_is_compared_in_constant_time(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = admin.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin.hmac, "compare_digest", spy)
    with TestClient(create_app(Settings(model_store=tiny_store, admin_token=TOKEN))) as client:
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert calls == [(b"wrong", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_the_token_is_never_logged_or_echoed(serve, tiny_store: Path) -> None:
    wrong = "wrong-token-6d1e0b"
    server: Server = serve(
        env={
            "INTENTLY_MODEL_STORE": str(tiny_store),
            "INTENTLY_ADMIN_TOKEN": TOKEN,
            "INTENTLY_LOG_LEVEL": "debug",
        }
    )
    seen: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for token in (TOKEN, wrong, f"{TOKEN}x", TOKEN[:-1]):
            for scheme in ("Bearer", "bearer", "Basic", ""):
                headers = {"Authorization": f"{scheme} {token}".strip()}
                for method, path, body in (
                    ("GET", "/v1/models", None),
                    ("POST", "/v1/models/nope/activate", None),
                    ("POST", "/v1/training-jobs", {"examples": [], "mode": "bad"}),
                    ("GET", "/v1/training-jobs/zzz", None),
                    ("POST", "/v1/classify", {"text": "hello"}),
                ):
                    r = http.request(method, path, headers=headers, json=body)
                    seen.append(f"{r.status_code} {r.headers} {r.text}")
    time.sleep(0.5)
    log = server.log_path.read_text() if server.log_path else ""
    assert "/v1/models" in log and "401" in log  # the log did record these requests
    for text in (*seen, log):
        assert TOKEN not in text and wrong not in text and TOKEN[:-1] not in text


def test_the_token_is_not_logged_in_process(tiny_store: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    with TestClient(create_app(Settings(model_store=tiny_store, admin_token=TOKEN, log_level="debug"))) as c:
        for name in ("intently", "uvicorn", "uvicorn.error"):
            logging.getLogger(name).addHandler(caplog.handler)
        root.addHandler(caplog.handler)
        try:
            with caplog.at_level(logging.DEBUG):
                c.get("/v1/models", headers=AUTH)
                c.get("/v1/models", headers={"Authorization": "Bearer not-it"})
                c.post("/v1/training-jobs", headers=AUTH, json={"examples": "x"})
        finally:
            for name in ("intently", "uvicorn", "uvicorn.error"):
                logging.getLogger(name).removeHandler(caplog.handler)
            root.removeHandler(caplog.handler)
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "/v1/models" in text
    assert TOKEN not in text and "not-it" not in text


# --- CORS ------------------------------------------------------------------------------------


def _preflight(client: TestClient, origin: str) -> httpx.Response:
    return client.options(
        "/v1/classify",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def test_cors_is_closed_by_default(admin_off: TestClient) -> None:
    r = _preflight(admin_off, "https://evil.example")
    assert "access-control-allow-origin" not in r.headers
    r = admin_off.post("/v1/classify", json={"text": "hello"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_allows_exactly_the_configured_origins(
    small_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTENTLY_CORS_ORIGINS", '["https://chat.example.com"]')
    settings = Settings(model_dir=small_model_dir)  # read from the environment, as a server does
    assert settings.cors_origins == ["https://chat.example.com"]
    with TestClient(create_app(settings)) as client:
        r = _preflight(client, "https://chat.example.com")
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        r = client.post("/v1/classify", json={"text": "hi"}, headers={"Origin": "https://chat.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://chat.example.com"
        r = _preflight(client, "https://evil.example")
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = client.post("/v1/classify", json={"text": "hi"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


# --- training options an admin could exhaust the machine with ---------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"embed_dim": 10**6}, "options.embed_dim: Input should be less than or equal to 2048"),
        ({"epochs": 10**9}, "options.epochs: Input should be less than or equal to 1000"),
        ({"min_steps": 10**9}, "min_steps"),
        ({"batch_size": 0}, "options.batch_size: Input should be greater than or equal to 1"),
        ({"epochs": "12"}, "options.epochs: Input should be a valid integer"),
        ({"bidirectional": "yes"}, "options.bidirectional: Input should be a valid boolean"),
        ({"max_oos_drop": 2.0}, "options.max_oos_drop: Input should be less than or equal to 1"),
        # A request must not make the server read its own files or download a model.
        ({"vectors": "/etc/passwd"}, "vectors must be 'auto' or ''"),
        ({"teacher": "someone/some-model"}, "teacher must be 'auto' or ''"),
        ({"encoder": "/etc/passwd"}, "encoder must be 'auto' or ''"),
        ({"transfer": "/etc/passwd"}, "transfer names a file"),
    ],
)
def test_oversized_training_options_are_refused_at_once(
    admin_on: TestClient, options: dict, message: str
) -> None:
    examples = [{"text": "book a table", "intent": "greet"}, {"text": "hey you", "intent": "greet"}]
    r = admin_on.post("/v1/training-jobs", headers=AUTH, json={"examples": examples, "options": options})
    assert r.status_code == 422 and message in r.json()["message"], r.text
    r = admin_on.post(
        "/v1/training-jobs",
        headers=AUTH,
        files={"file": ("d.csv", b"text,intent\nhi there,greet\nhey you,greet\n")},
        data={"options": json.dumps(options)},
    )
    assert r.status_code == 422 and message in r.json()["message"], r.text
    assert admin_on.get("/v1/training-jobs", headers=AUTH).json() == {"jobs": []}
