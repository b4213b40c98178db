"""`pip install intently` with no extras, for real: a new virtual environment holding the project and
exactly the packages its core dependencies name (and theirs), no torch. There `intently predict` and
`intently serve --model` work, `pip check` finds nothing missing, and `intently train` says which
extra it needs (DESIGN.md, "Serving without torch").

Offline and quick: the dependencies are the ones already installed in this interpreter's
environment, linked into the new one (each distribution's files, as its RECORD lists them), and the
project is built from this tree with `pip install --no-deps --no-index --no-build-isolation`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.process


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_closure() -> dict[str, metadata.Distribution]:
    """The installed distributions that the project's core dependencies need, with the extras named."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    found: dict[str, metadata.Distribution] = {}
    extras: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        key = _name(req.name)
        wanted = extras.setdefault(key, set())
        if key in found and req.extras <= wanted:
            continue
        wanted |= req.extras
        dist = found.setdefault(key, metadata.distribution(req.name))
        for text in dist.requires or []:
            sub = Requirement(text)
            env = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(e) for e in env):
                todo.append(sub)
    return found


def _link(dist: metadata.Distribution, site: Path) -> None:
    """Every top-level file or folder of `dist` in `site`, as a link to the installed one."""
    base = Path(str(dist.locate_file("")))
    tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    for top in tops:
        target = site / top
        if not target.exists():
            target.symlink_to(base / top)


@pytest.fixture(scope="module")
def slim_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python3*/site-packages")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    # A copy of what the package is made of: the build writes build/ and *.egg-info beside it.
    source = venv.parent / "source"
    for name in ("model", "store", "training", "app"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # The venv's own setuptools may be older than the build needs: this interpreter's replaces it.
    subprocess.run([*pip, "uninstall", "-q", "-y", "setuptools"], check=True, timeout=120)
    closure = core_closure()
    assert "torch" not in closure, "a core dependency pulls torch in"
    for dist in closure.values():
        _link(dist, site)
    _link(metadata.distribution("setuptools"), site)  # the build backend, for the project alone
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", "--no-build-isolation", str(source)],
        check=True,
        timeout=300,
        cwd=venv.parent,
    )
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    return venv


def _env() -> dict[str, str]:
    """This environment without what would let the source tree or the test venv answer instead."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "intently"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv.parent,  # not the source tree: the installed package answers
        env=_env(),
    )


def test_the_installed_package_has_no_torch(slim_venv: Path) -> None:
    python = str(slim_venv / "bin" / "python")
    code = "import importlib.util, app, model; print(importlib.util.find_spec('torch'), app.__file__)"
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=slim_venv.parent, timeout=60, env=_env()
    )
    spec, where = out.stdout.split()
    assert spec == "None" and "site-packages" in where, out


def test_predict_and_evaluate_work_and_training_names_the_extra(
    slim_venv: Path, small_model_dir: Path, tmp_path: Path
) -> None:
    predicted = _run(slim_venv, "predict", str(small_model_dir), "What time is it?")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["intent"] == "ask_time"
    data = tmp_path / "data.csv"
    data.write_text("text,intent\nhello,greet\nbye,goodbye\n", encoding="utf-8")
    evaluated = _run(slim_venv, "evaluate", str(small_model_dir), str(data), "--json")
    assert evaluated.returncode == 0 and "accuracy" in json.loads(evaluated.stdout), evaluated
    train = ["train", str(data), "--out", str(tmp_path / "m")]
    for args in (
        train,
        ["worker", "--store", str(tmp_path / "s")],
        ["encoder", "build", str(data), "--out", str(tmp_path / "e.safetensors")],
        ["vectors", "build", "--out", str(tmp_path / "v.safetensors")],
        ["evaluate", str(small_model_dir), str(data), "--report", str(tmp_path / "report")],
    ):
        refused = _run(slim_venv, *args)
        assert refused.returncode == 2, refused
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"intently {args[0]}: error:"), line
        assert "pip install 'intently[train]'" in line, line


def test_serve_model_answers(slim_venv: Path, small_model_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [str(slim_venv / "bin" / "intently"), "serve", "--model", str(small_model_dir), f"--port={port}"],
            cwd=slim_venv.parent,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
            answer = httpx.post(f"{url}/v1/classify", json={"text": "What time is it?"}, timeout=10).json()
            assert answer["intent"] == "ask_time", answer
        finally:
            proc.terminate()
            assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()
