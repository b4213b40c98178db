"""Shared by the HTTP benchmarks: train a model, start servers, find their pids, drive wrk and hey.

Every process is started in a new session (its own process group) and is
killed as a group, so a benchmark never leaves a server, worker or load
generator behind, even on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
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

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "127.0.0.1"
PATH = "/v1/classify"
DEFAULT_TEXT = "What time is it?"

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
    """Run a load generator to completion (stdout+stderr), killing its group if it overruns."""
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


def _ready(server: Server) -> Server:
    """Wait for the server's /readyz; never leave it running if it does not come up."""
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def start_real(
    model: Path, workers: int, logdir: Path, env: dict[str, str] | None = None, kind: str = "real"
) -> Server:
    """`intently serve` exactly as a user starts it; settings only through INTENTLY_* variables."""
    port = free_port()
    cmd = [str(VENV_BIN / "intently"), "serve", "--model", str(model), "--port", str(port)]
    cmd += ["--workers", str(workers)]
    return _ready(Server(kind, cmd, port, env or {}, logdir))


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


# --- memory --------------------------------------------------------------------------------


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":  # 0A = LISTEN
                    inodes.add(parts[9])
    return inodes


def descendants(root: int) -> list[int]:
    """`root` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


def worker_pids(root_pid: int, port: int) -> list[int]:
    """The processes under `root_pid` that accept requests on `port`: those holding its socket.

    With 1 worker uvicorn serves in the process we started; with more, the
    supervisor holds the socket too but serves nothing, so it is dropped when
    any of its descendants hold the socket as well. Empty while nothing listens.
    """
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    holders = []
    for pid in descendants(root_pid):
        with contextlib.suppress(OSError):
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                holders.append(pid)
    workers = [p for p in holders if p != root_pid]
    return workers or holders


def serving_pids(server: Server) -> list[int]:
    pids = worker_pids(server.proc.pid, server.port)
    if not pids:
        raise RuntimeError(f"no process of {server.kind} (pid {server.proc.pid}) listens on {server.port}")
    return pids


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MB (MiB), from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def total_rss_mb(pids: Sequence[int]) -> float:
    """Sum of the VmRSS of `pids` in MiB; a process that is gone counts 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_mb(pid)
    return total


# --- load generators -----------------------------------------------------------------------


def utterances(limit: int = 8) -> list[str]:
    """A few real test utterances of different intents, so requests are not all one string."""
    path = ROOT / "data" / "assistant" / "test.csv"
    picked: dict[str, str] = {}
    with contextlib.suppress(OSError), open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text, intent = (row.get("text") or "").strip(), row.get("intent") or ""
            if text and intent not in picked:
                picked[intent] = text
            if len(picked) >= limit:
                break
    return list(picked.values()) or [DEFAULT_TEXT]


def _lua_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_wrk_script(texts: Sequence[str], dest: Path) -> Path:
    """A wrk Lua script that POSTs JSON bodies, rotating over `texts`, pre-formatted per thread."""
    bodies = ",\n  ".join(_lua_string(json.dumps({"text": t})) for t in texts)
    dest.write_text(
        f"""-- generated by bench/server_util.py
local bodies = {{
  {bodies}
}}
local reqs = {{}}
local i = 0
init = function(args)
  for _, b in ipairs(bodies) do
    reqs[#reqs + 1] = wrk.format("POST", "{PATH}", {{["Content-Type"] = "application/json"}}, b)
  end
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
""",
        encoding="utf-8",
    )
    return dest


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_TIME = r"([0-9.]+)\s*(us|ms|s|m|h)\b"


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """Throughput, p50/p99 in ms, and error counts from `wrk --latency` text output.

    Raises when a figure a table needs is missing, rather than reporting 0.
    """
    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s*([0-9.]+)", text)
    if not m:
        raise ValueError(f"no Requests/sec in wrk output:\n{text[-1500:]}")
    out["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in " + _TIME, text)
    if m:
        out["requests"] = int(m.group(1))
        out["seconds"] = _ms(m.group(2), m.group(3)) / 1000
    dist = text.split("Latency Distribution", 1)
    if len(dist) != 2:
        raise ValueError(f"no latency distribution (run wrk with --latency):\n{text[-1500:]}")
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+{_TIME}", dist[1], re.MULTILINE)
        if m:
            out[f"p{pct}_ms"] = _ms(m.group(1), m.group(2))
    if "p50_ms" not in out or "p99_ms" not in out:
        raise ValueError(f"no p50/p99 in wrk output:\n{text[-1500:]}")
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    m = re.search(r"Socket errors:(.*)", text)
    if m:
        for name, count in re.findall(r"(connect|read|write|timeout)\s+(\d+)", m.group(1)):
            socket_errors[name] = int(count)
    out["socket_errors"] = socket_errors
    out["errors"] = out["non_2xx"] + sum(socket_errors.values())
    return out


def run_wrk(
    url: str, script: Path, connections: int, duration: float, threads: int = 1, timeout_s: float = 5.0
) -> dict[str, Any]:
    """One wrk run; wrk's own --timeout makes stuck requests count as socket timeouts."""
    threads = max(1, min(threads, connections))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration:g}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(script),
        url + PATH,
    ]
    text = run_bounded(cmd, timeout=duration + timeout_s + 30)
    return parse_wrk(text)


def run_hey(url: str, requests: int, concurrency: int = 32, text: str = DEFAULT_TEXT) -> dict[str, Any]:
    """`hey -n N` with one JSON body; status counts and errors parsed from its summary.

    hey sends c * (n // c) requests, so n is rounded up to a multiple of c and
    every request not answered 2xx (transport errors included) is an error.
    """
    sent = -(-requests // concurrency) * concurrency
    body = json.dumps({"text": text})
    cmd = ["hey", "-n", str(sent), "-c", str(concurrency), "-m", "POST", "-T", "application/json"]
    cmd += ["-d", body, url + PATH]
    # Bounded generously: 100 requests/s is far below any healthy run.
    out = run_bounded(cmd, timeout=60 + sent / 100)
    statuses = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    m = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    errors = (
        re.findall(r"\[(\d+)\]\s+(.+)", out.split("Error distribution:", 1)[1])
        if "Error distribution:" in out
        else []
    )
    ok = sum(n for c, n in statuses.items() if 200 <= c < 300)
    return {
        "rps": float(m.group(1)) if m else None,
        "sent": sent,
        "statuses": statuses,
        "ok": ok,
        "errors": sent - ok,
        "error_lines": [f"[{n}] {msg.strip()}" for n, msg in errors][:5],
    }


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
