"""A long soak: the real server under steady load for many minutes; the last minute against the first.

    .venv/bin/python -m bench.soak --minutes 30 [--workers 2] [--concurrency 64] [--model DIR]

Starts `intently serve --workers N` on a loopback port (training a model
first unless --model is given), holds `concurrency` requests in flight with
bench/loadgen.py (wrk where installed), and prints one line a minute:
requests, errors, p50, p99 and the summed resident memory of the workers.
At the end the first minute is the baseline the last one is compared with:
a leak shows as RSS growth, a slowdown as a higher p99 or a lower rate. Results: bench/results/soak.json.
Targets: no error at all, RSS growth under 10%, last-minute p99 within 2x of
the first minute's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import server_util as su
from bench.common import table, write_results
from bench.loadgen import measure
from tests.support.loadgen import utterances
from tests.support.processes import total_rss_mb, worker_pids

MAX_RSS_GROWTH_PCT = 10.0
MAX_P99_RATIO = 2.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to hold the load (default 30)")
    p.add_argument("--window", type=float, default=60.0, help="seconds per reported line (default 60)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the baseline")
    p.add_argument("--model", help="serve this model directory (default: train one now, ~20 s)")
    args = p.parse_args()
    if args.minutes <= 0 or args.window <= 0 or args.workers < 1 or args.concurrency < 1:
        p.error("--minutes, --window, --workers and --concurrency must be positive")
    return args


def _line(n: int, row: dict[str, Any]) -> list[Any]:
    return [n, row["requests"], row["errors"], row["rps"], row["p50_ms"], row["p99_ms"], row["rss_mb"]]


def soak(server: su.Server, args: argparse.Namespace) -> dict[str, Any]:
    texts = utterances()
    pids = worker_pids(server.proc.pid, server.port)
    measure(server.url, texts, args.concurrency, args.warmup)
    rss_start = total_rss_mb(pids)
    print(f"workers {pids}, RSS after warm-up {rss_start:.1f} MB; one line per {args.window:g} s", flush=True)
    headers = ["window", "requests", "errors", "req/s", "p50 ms", "p99 ms", "RSS MB"]
    print("  ".join(headers), flush=True)
    windows: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.minutes * 60
    while (left := deadline - time.monotonic()) > 1:
        figures = measure(server.url, texts, args.concurrency, min(args.window, left))
        row = {**figures, "rss_mb": round(total_rss_mb(pids), 1)}
        windows.append(row)
        print("  ".join(str(c) for c in _line(len(windows), row)), flush=True)
    first, last = windows[0], windows[-1]
    rss_end = total_rss_mb(pids)
    baseline_rss = first["rss_mb"]  # after a whole window: the allocator has settled
    verdict = {
        "errors": sum(w["errors"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "rss_growth_pct": round(100 * (rss_end - baseline_rss) / baseline_rss, 2),
        "rss_growth_since_warmup_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "p99_ratio_last_vs_first": round(last["p99_ms"] / first["p99_ms"], 2),
        "workers_unchanged": worker_pids(server.proc.pid, server.port) == pids,
    }
    print()
    print(
        table(
            ["", "requests", "errors", "req/s", "p50 ms", "p99 ms", "RSS MB"],
            [
                ["first window (baseline)", *_line(1, first)[1:]],
                ["last window", *_line(len(windows), last)[1:]],
            ],
        )
    )
    ok = (
        verdict["errors"] == 0
        and verdict["rss_growth_pct"] < MAX_RSS_GROWTH_PCT
        and verdict["p99_ratio_last_vs_first"] < MAX_P99_RATIO
        and verdict["workers_unchanged"]
    )
    print(
        f"\n{verdict['requests']} requests, {verdict['errors']} errors; RSS after the first window "
        f"{baseline_rss:.1f} -> {rss_end:.1f} MB ({verdict['rss_growth_pct']:+.1f}%, target "
        f"< {MAX_RSS_GROWTH_PCT:g}%; since warm-up {verdict['rss_growth_since_warmup_pct']:+.1f}%); "
        f"p99 last/first {verdict['p99_ratio_last_vs_first']} (target < {MAX_P99_RATIO:g}): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    rss = {"rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1)}
    return {"windows": windows, **rss, **verdict}


def main() -> None:
    args = parse_args()
    su.install_signal_handlers()
    try:
        with su.model_dir(args.model) as model, tempfile.TemporaryDirectory(prefix="intently-soak-") as logs:
            server = su.start_real(model, args.workers, Path(logs), kind="soak")
            try:
                figures = soak(server, args)
            finally:
                server.stop()
        path = write_results("soak", {"machine": su.machine_facts(), "args": vars(args), **figures})
        print(f"results: {path}")
    finally:
        su.kill_all()


if __name__ == "__main__":
    main()
