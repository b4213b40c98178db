"""A serving process never imports torch: it starts, loads a model and classifies with model/runtime.py;
without PostgreSQL, it never imports psycopg either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# In a fresh interpreter in which torch cannot be imported at all (so an import anywhere fails
# loudly rather than passing unseen): the app built, started, asked, and torch still absent.
SERVE_WITHOUT_TORCH = """
import json, sys
sys.modules["torch"] = None
from fastapi.testclient import TestClient
import app.cli  # `intently serve` itself: with one worker, uvicorn serves in this process
from app.config import Settings
from app.main import create_app

settings = Settings(**json.loads(sys.argv[1]))
with TestClient(create_app(settings)) as client:
    ready = client.get("/readyz").json()
    single = client.post("/v1/classify", json={"text": "What time is it?"}).json()
    batch = client.post("/v1/classify/batch", json={"texts": ["play some jazz", "bake bread?"]}).json()
    parsed = client.post("/model/parse", json={"text": "wake me up at 7"}).status_code
print(json.dumps({"ready": ready, "single": single, "batch": batch, "parse": parsed,
                  "torch": sys.modules.get("torch") is not None, "psycopg": "psycopg" in sys.modules}))
"""


@pytest.mark.parametrize("where", ["model_dir", "model_store"])
def test_the_app_serves_without_importing_torch(
    where: str, small_model_dir: Path, small_store_template: Path, tmp_path: Path
) -> None:
    if where == "model_dir":
        settings = {"model_dir": str(small_model_dir)}
    else:
        settings = {"model_store": str(shutil.copytree(small_store_template, tmp_path / "store"))}
    proc = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_TORCH, json.dumps(settings)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ready"]["ready"] is True
    assert out["single"]["intent"] == "ask_time" and not out["single"]["out_of_scope"]
    assert len(out["batch"]["results"]) == 2
    assert out["parse"] == 200
    assert out["torch"] is False
    assert out["psycopg"] is False  # nor the PostgreSQL driver, on a directory or a model store
