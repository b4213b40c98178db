"""Shared by the HTTP benchmarks: train a model, start servers and find the processes that serve.

Every process is started in a new session (its own process group) and is
killed as a group, so a benchmark never leaves a server, worker or load
generator behind, even on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.processes import worker_pids

ROOT = Path(__file__).resolve().parents[1]
# The project's venv, else the one running this (a git worktree shares another checkout's venv).
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin").is_dir() else Path(sys.executable).parent
HOST = "127.0.0.1"

_live: list[subprocess.Popen[bytes]] = []


# --- processes -------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # so every `finally` runs and kills what it started


def install_signal_handlers() -> None:
    """SIGTERM (and SIGHUP) unwind like Ctrl-C does, so try/finally cleans up."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)


def spawn(
    cmd: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own process group, so `kill_group` reaches every process it forks."""
    out: Any = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by kill_group
    proc = subprocess.Popen(
        list(cmd),
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proc._bench_log = out  # type: ignore[attr-defined]
    _live.append(proc)
    return proc


def kill_group(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL whatever is left."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        # Workers may outlive a dead leader: always sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    finally:
        log = getattr(proc, "_bench_log", None)
        if log not in (None, subprocess.DEVNULL):
            log.close()
        if proc in _live:
            _live.remove(proc)


def kill_all() -> None:
    """Kill every child this benchmark started and has not stopped yet."""
    for proc in list(_live):
        kill_group(proc, grace=5.0)


def run_bounded(cmd: Sequence[str], timeout: float) -> str:
    """Run a command to completion (stdout+stderr), killing its group if it overruns."""
    proc = subprocess.Popen(
        list(cmd), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    _live.append(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=1.0)
        raise TimeoutError(f"{cmd[0]} ran longer than {timeout:.0f}s and was killed") from None
    finally:
        if proc in _live:
            kill_group(proc, grace=1.0)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{text[-2000:]}")
    return text


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on a free loopback port; `kind` names it in tables and results."""

    def __init__(self, kind: str, cmd: Sequence[str], port: int, env: dict[str, str], logdir: Path):
        self.kind = kind
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = logdir / f"{kind}-{port}.log"
        self.proc = spawn(cmd, env, self.log)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        kill_group(self.proc)


def _ready(server: Server, timeout: float = 120.0) -> Server:
    """Wait for the server's /readyz; never leave it running if it does not come up."""
    try:
        server.wait_ready(timeout)
    except BaseException:
        server.stop()
        raise
    return server


# The serving path before the numpy runtime, inside today's server: the holder's Predictor.load
# is the torch network's, quantized as it was served (int8 recurrent and linear layers, fp16
# tables). `python -c TORCH_SERVE serve ...` is `intently serve ...` on that path.
TORCH_SERVE = """
import sys
import torch
from model.predictor import Predictor
from training.network import TorchScorer, load_net, quantize_dynamic

def torch_load(model_dir, quantize=False):
    net, meta, tokenizer = load_net(model_dir)
    net = quantize_dynamic(net, inplace=True)
    net.half_tables()
    return Predictor(TorchScorer(net), meta, tokenizer)

Predictor.load = staticmethod(torch_load)
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_real(
    model: Path | None,
    workers: int,
    logdir: Path,
    env: dict[str, str] | None = None,
    kind: str = "real",
    torch_path: bool = False,
) -> Server:
    """`intently serve` exactly as a user starts it; settings only through INTENTLY_* variables.
    With `torch_path`, the same server classifying through torch's int8 network (TORCH_SERVE).
    Without a model, it serves its store (INTENTLY_MODEL_STORE in `env`), which an empty store
    makes a first start: the built-in model trained before it is ready (minutes)."""
    port = free_port()
    serve = [
        "serve",
        *(["--model", str(model)] if model else []),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    cmd = [sys.executable, "-c", TORCH_SERVE, *serve] if torch_path else [str(VENV_BIN / "intently"), *serve]
    return _ready(Server(kind, cmd, port, env or {}, logdir), 120.0 if model else 1800.0)


def start_bare(workers: int, logdir: Path, kind: str = "bare") -> Server:
    """The bare FastAPI app (bench/bare_app.py) under the same uvicorn options."""
    port = free_port()
    cmd = [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--workers", str(workers)]
    return _ready(Server(kind, cmd, port, {}, logdir))


@contextlib.contextmanager
def model_dir(given: str | None) -> Iterator[Path]:
    """The model to serve: --model as given, else one trained now into a temp dir (removed after)."""
    if given:
        path = Path(given).resolve()
        if not (path / "model.json").is_file():
            raise SystemExit(f"--model {given}: no model.json there")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="intently-bench-model-") as tmp:
        out = Path(tmp) / "model"
        print("training a model on data/assistant/train.csv (about 20 s) ...", flush=True)
        started = time.perf_counter()
        cmd = [str(VENV_BIN / "intently"), "train", "data/assistant/train.csv", "--out", str(out), "--quiet"]
        run_bounded(cmd, timeout=600)
        print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
        yield out


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """--env NAME=VALUE flags, for settings such as INTENTLY_QUANTIZE=1 on the real server."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


# --- processes of a server ----------------------------------------------------------------


def serving_pids(server: Server) -> list[int]:
    pids = worker_pids(server.proc.pid, server.port)
    if not pids:
        raise RuntimeError(f"no process of {server.kind} (pid {server.proc.pid}) listens on {server.port}")
    return pids


# --- output --------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge the figures: cores, load when the run started, versions."""
    import fastapi
    import uvicorn

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "uvicorn": uvicorn.__version__,
        "fastapi": fastapi.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
