"""Resident memory of a serving worker after warm-up and after sustained traffic, against the bare app;
and, in the same run, the numpy runtime beside the torch network in a process of their own.

    .venv/bin/python -m bench.memory [--requests 100000] [--model DIR] [--env INTENTLY_QUANTIZE=1]

In process: a fresh interpreter per path loads the model (the runtime as `Predictor.load`
serves it; torch's int8 form as served before the runtime) and classifies --distinct
different utterances one at a time; its RSS after the import, after loading, and after the
traffic.

One real server (1 worker), 1,000 warm-up requests, the RSS of the process
that serves (found through the listening socket), then --requests more from
bench/loadgen.py (wrk where installed) with the RSS sampled every few seconds,
and the RSS again; the bare app (bench/bare_app.py) gets the same traffic in
the same run, so the framework's own growth is visible beside ours.
Targets: <= 400 MB after warm-up, growth < 5%. Results: bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import server_util as su
from bench.common import table, write_results
from bench.loadgen import measure
from tests.support.loadgen import utterances
from tests.support.processes import rss_mb

WARMUP = 1000
MAX_WARM_MB = 400.0
# Issue 30: a worker without torch, after warm-up and after the traffic (built-in model).
MAX_WORKER_MB = 150.0
MAX_GROWTH_PCT = 5.0
# Traffic runs in slices this long, with the RSS read between them: a plateau and a climb differ.
SLICE_SECONDS = 5.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", type=int, default=100_000, help="requests after warm-up (default 100000)")
    p.add_argument("--concurrency", type=int, default=32, help="connections (default 32)")
    p.add_argument("--model", help="serve this model directory (default: train one now, ~20 s)")
    p.add_argument("--distinct", type=int, default=3000, help="distinct utterances in process (default 3000)")
    p.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for the real server"
    )
    p.add_argument(
        "--first-start",
        action="store_true",
        help="also a server started on an empty store, which trains the built-in model first (minutes)",
    )
    args = p.parse_args()
    if args.requests < 1 or args.concurrency < 1:
        p.error("--requests and --concurrency must be positive")
    return args


def send(url: str, requests: int, concurrency: int, pid: int) -> dict[str, Any]:
    """At least `requests` requests, in slices sized from the rate so far; the RSS after each slice."""
    texts = utterances()
    sent = ok = errors = 0
    busy = 0.0
    samples: list[float] = []
    seconds = 1.0  # a first short slice measures the rate
    while sent < requests:
        figures = measure(url, texts, concurrency, seconds)
        sent, ok, errors = sent + figures["requests"], ok + figures["ok"], errors + figures["errors"]
        busy += figures["seconds"]
        samples.append(round(rss_mb(pid), 1))
        rate = max(figures["requests"] / figures["seconds"], 1.0)
        seconds = min(SLICE_SECONDS, max(1.0, (requests - sent) / rate))
    return {"sent": sent, "ok": ok, "errors": errors, "rps": ok / busy, "samples": samples}


# Run in a fresh interpreter: argv[1] the path ("runtime" or "torch"), argv[2] the model, argv[3] the texts.
IN_PROCESS = """
import json, sys
import psutil
def rss():
    return round(psutil.Process().memory_info().rss / 2**20, 1)
path, model, texts = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
from model.predictor import Predictor
if path == "torch":
    from training.network import TorchScorer, load_net, quantize_dynamic
imported = rss()
if path == "torch":
    net, meta, tokenizer = load_net(model)
    net = quantize_dynamic(net, inplace=True)
    net.half_tables()
    predictor = Predictor(TorchScorer(net), meta, tokenizer)
else:
    predictor = Predictor.load(model, quantize=True)
for t in texts[:100]:
    predictor.predict(t)
loaded = rss()
for t in texts:
    predictor.predict(t)
print(json.dumps({"path": path, "imported_mb": imported, "warm_mb": loaded, "after_traffic_mb": rss(),
                  "torch_imported": "torch" in sys.modules}))
"""


def distinct_texts(count: int) -> list[str]:
    """`count` different utterances: the built-in test rows, then variants of them."""
    with open(su.ROOT / "data" / "assistant" / "test.csv", newline="", encoding="utf-8") as f:
        rows = [row["text"] for row in csv.DictReader(f)]
    return [f"{rows[i % len(rows)]} {i // len(rows) or ''}".strip() for i in range(count)]


def in_process(model: Path, count: int, tmp: Path) -> list[dict[str, Any]]:
    texts = tmp / "texts.json"
    texts.write_text(json.dumps(distinct_texts(count)))
    out = []
    for path in ("runtime", "torch"):
        proc = subprocess.run(
            [sys.executable, "-c", IN_PROCESS, path, str(model), str(texts)],
            capture_output=True,
            text=True,
            check=True,
            cwd=su.ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=600,
        )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def measure_server(server: su.Server, requests: int, concurrency: int) -> dict[str, Any]:
    """RSS after warm-up and after `requests` more, of the one process that serves."""
    pids = su.serving_pids(server)
    if len(pids) != 1:
        raise RuntimeError(f"{server.kind}: expected one serving process, found {pids}")
    pid = pids[0]
    warm = send(server.url, WARMUP, concurrency, pid)
    time.sleep(1.0)  # let in-flight work and its garbage settle before reading
    rss_warm = rss_mb(pid)
    load = send(server.url, requests, concurrency, pid)
    time.sleep(1.0)
    rss_final = rss_mb(pid)
    return {
        "server": server.kind,
        "pid": pid,
        "pid_is_launched_process": pid == server.proc.pid,
        "rss_warm_mb": round(rss_warm, 1),
        "rss_final_mb": round(rss_final, 1),
        "growth_pct": round(100 * (rss_final - rss_warm) / rss_warm, 2),
        "max_under_load_mb": max(load["samples"]),
        "sent": warm["sent"] + load["sent"],
        "rps": load["rps"],
        "errors": warm["errors"] + load["errors"],
        "samples": load["samples"],
    }


def main() -> None:
    args = parse_args()
    su.install_signal_handlers()
    env = su.parse_env(args.env)
    results: list[dict[str, Any]] = []
    facts = su.machine_facts()
    started = time.perf_counter()
    try:
        with (
            su.model_dir(args.model) as model,
            tempfile.TemporaryDirectory(prefix="intently-bench-mem-") as t,
        ):
            tmp = Path(t)
            print(f"  in process: runtime and torch, {args.distinct} distinct utterances ...", flush=True)
            local = in_process(model, args.distinct, tmp)
            for r in local:
                print(f"  {r}", flush=True)
            for kind in ("real", "first-start", "bare") if args.first_start else ("real", "bare"):
                if kind == "bare":
                    server = su.start_bare(1, tmp)
                elif kind == "first-start":
                    print("  first-start: training the built-in model into an empty store ...", flush=True)
                    empty = {**env, "INTENTLY_MODEL_STORE": str(tmp / "empty-store")}
                    server = su.start_real(None, 1, tmp, empty, kind=kind)
                else:
                    server = su.start_real(model, 1, tmp, env)
                try:
                    print(f"  {kind}: {WARMUP} warm-up + {args.requests} requests ...", flush=True)
                    results.append(measure_server(server, args.requests, args.concurrency))
                finally:
                    server.stop()
    finally:
        su.kill_all()

    rows = [
        [
            r["server"],
            f"{r['rss_warm_mb']:.1f}",
            f"{r['rss_final_mb']:.1f}",
            f"{r['growth_pct']:+.2f}",
            f"{r['max_under_load_mb']:.1f}",
            r["sent"],
            f"{r['rps']:.0f}",
            r["errors"],
        ]
        for r in results
    ]
    print()
    print(
        table(
            ["server", "warm RSS MB", "final RSS MB", "growth %", "max MB", "sent", "req/s", "errors"],
            rows,
        )
    )
    print()
    print(
        table(
            ["in process", "after import MB", "warm MB", f"after {args.distinct} MB", "torch imported"],
            [
                [r["path"], r["imported_mb"], r["warm_mb"], r["after_traffic_mb"], r["torch_imported"]]
                for r in local
            ],
        )
    )
    real = results[0]
    checks = [
        (
            f"RSS after warm-up {real['rss_warm_mb']:.1f} MB (<= {MAX_WARM_MB:.0f})",
            real["rss_warm_mb"] <= MAX_WARM_MB,
        ),
        (
            f"RSS after the traffic {real['rss_final_mb']:.1f} MB (<= {MAX_WORKER_MB:.0f}, issue 30)",
            max(real["rss_warm_mb"], real["rss_final_mb"]) <= MAX_WORKER_MB,
        ),
        (f"growth {real['growth_pct']:+.2f}% (< {MAX_GROWTH_PCT:.0f}%)", real["growth_pct"] < MAX_GROWTH_PCT),
        (f"errors {real['errors']} (== 0)", real["errors"] == 0),
    ]
    first = next((r for r in results if r["server"] == "first-start"), None)
    if first is not None:
        checks.append(
            (
                f"first start: RSS after the traffic {first['rss_final_mb']:.1f} MB (<= {MAX_WORKER_MB:.0f})",
                max(first["rss_warm_mb"], first["rss_final_mb"]) <= MAX_WORKER_MB,
            )
        )
    print(f"\ntargets (real, 1 worker, {args.requests} requests after warm-up):")
    for text, ok in checks:
        print(f"  {text}  {'PASS' if ok else 'FAIL'}")
    elapsed = time.perf_counter() - started
    payload = {
        "facts": {**facts, "args": vars(args), "warmup_requests": WARMUP, "seconds": round(elapsed, 1)},
        "results": results,
        "in_process": local,
        "targets": {text: ok for text, ok in checks},
    }
    path = write_results("memory", payload)
    print(f"\ndone in {elapsed:.0f} s; results in {path.relative_to(su.ROOT)}")


if __name__ == "__main__":
    main()
