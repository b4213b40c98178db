"""Process start to ready: `intently serve --model MODEL` without torch, beside the serving path before
the numpy runtime (torch imported, the model loaded as torch's int8 network), in the same run.

    PYTHONPATH=. .venv/bin/python -m bench.startup --model MODEL [--rounds 7]

Each round starts every server once, in turn (so a drifting load meets all of them), as a new
process, and times from the fork to the first 200 from /readyz (polled every 10 ms): the
interpreter's start, the imports, the model's load and uvicorn's start. One untimed round comes
first, so the disk cache is warm for all. The servers:

- runtime: `python -m app.cli serve --model MODEL`, as served today (no torch in the process;
  checked through the process's loaded files).
- torch int8: the same command with `Predictor.load` replaced, before it starts, by the load of
  the serving path before the runtime: `import torch`, the torch network, `quantize_dynamic`,
  fp16 tables (as bench/memory.py's in-process torch path).
- bare: the bare FastAPI app (bench/bare_app.py): what a process that loads no model costs.

Issue 30's target: start to ready at most half of the path before. Results: bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import server_util as su
from bench.common import table, write_results
from tests.support.processes import rss_mb

KINDS = ("runtime", "torch int8", "bare")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", help="the model to serve (default: train one now on the built-in data)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be positive")
    return args


def command(kind: str, model: Path, port: int) -> list[str]:
    if kind == "bare":
        return [sys.executable, "-m", "bench.bare_app", "--port", str(port), "--workers", "1"]
    serve = ["serve", "--model", str(model), "--port", str(port), "--workers", "1"]
    if kind == "runtime":
        return [sys.executable, "-m", "app.cli", *serve]
    return [sys.executable, "-c", su.TORCH_SERVE, *serve]


def start_to_ready(kind: str, model: Path, logdir: Path, timeout: float = 300.0) -> dict[str, Any]:
    """Seconds from the fork to the first 200 from /readyz; the RSS then; whether torch is loaded."""
    port = su.free_port()
    started = time.perf_counter()
    proc = su.spawn(command(kind, model, port), {"OMP_NUM_THREADS": "1"}, logdir / f"{kind}-{port}.log")
    try:
        while True:
            if proc.poll() is not None:
                log = (logdir / f"{kind}-{port}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{kind} exited with {proc.returncode}:\n{log}")
            try:
                with urllib.request.urlopen(f"http://{su.HOST}:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{kind} not ready after {timeout:.0f} s")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        maps = Path(f"/proc/{proc.pid}/maps")
        torch_loaded = "libtorch" in maps.read_text() if maps.exists() else None
        return {"seconds": seconds, "rss_mb": rss_mb(proc.pid), "torch_loaded": torch_loaded}
    finally:
        su.kill_group(proc)


def main() -> int:
    args = parse_args()
    su.install_signal_handlers()
    facts = su.machine_facts()
    print(f"machine: {facts}", flush=True)

    with su.model_dir(args.model) as model, tempfile.TemporaryDirectory(prefix="intently-startup-") as tmp:
        logdir = Path(tmp)
        print("warm-up round (untimed) ...", flush=True)
        for kind in KINDS:
            start_to_ready(kind, model, logdir)
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for i in range(args.rounds):
            for kind in KINDS:
                runs[kind].append(start_to_ready(kind, model, logdir))
            line = ", ".join(f"{k} {runs[k][-1]['seconds']:.2f} s" for k in KINDS)
            print(f"round {i + 1}/{args.rounds}: {line}", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for kind, results in runs.items():
        times = [r["seconds"] for r in results]
        summary[kind] = {
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "rss_mb_at_ready": round(statistics.median(r["rss_mb"] for r in results), 1),
            "torch_loaded": sorted({str(r["torch_loaded"]) for r in results}),
        }
    ratio = summary["runtime"]["median_s"] / summary["torch int8"]["median_s"]
    rows = []
    for kind, s in summary.items():
        seconds = [f"{s[f'{m}_s']:.2f}" for m in ("median", "min", "max")]
        rows.append([kind, *seconds, s["rss_mb_at_ready"], "/".join(s["torch_loaded"])])
    print()
    print(table(["server", "median s", "min s", "max s", "RSS at ready MB", "torch loaded"], rows))
    print(f"\nruntime / torch int8, median start to ready: {ratio:.2f} (issue 30: at most 0.5)")
    path = write_results(
        "startup",
        {"facts": facts, "args": vars(args), "summary": summary, "ratio": round(ratio, 3), "runs": runs},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
