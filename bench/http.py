"""HTTP throughput and latency of /v1/classify against the bare web stack, under bench/loadgen.py.

    .venv/bin/python -m bench.http [--concurrency 1 16 64] [--duration 10] [--workers 1 2]
                                   [--model DIR] [--env INTENTLY_QUANTIZE=1] [--review] [--torch]

For each worker count, three servers run side by side on loopback ports:
the real service with micro-batching on (defaults), the real service with
it off (INTENTLY_BATCH_MAX_SIZE=1), and bench/bare_app.py (same FastAPI +
uvicorn options, constant answer: the ceiling of the stack). For every
concurrency the three are loaded back to back, so a compared pair is
measured seconds apart and background load on a shared machine hits both.
With --review a fourth server joins them: batching on and the review inbox on
(INTENTLY_REVIEW=true, its SQLite inbox in a temporary store), loaded right
after batch-on, so that the cost of capture is read off the same run. With
--repeat N every server is loaded N times per concurrency, in alternating
order, and the table gives the medians (every round is in the JSON). With --torch another
server joins them: batching on, classifying through torch's int8 network as served before
the numpy runtime (bench/server_util.py's TORCH_SERVE), so that the runtime's throughput is
read beside it in the same run (issue 30: at least the torch server's at c=64, 0 errors).
Results: a table here and bench/results/http.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import loadgen
from bench import server_util as su
from bench.common import table, write_results
from tests.support.loadgen import utterances

ON, OFF, BARE, REVIEW, TORCH = "batch-on", "batch-off", "bare", "review-on", "torch-int8"
KINDS = (ON, OFF, BARE)

# Targets (1 worker): throughput and p99 at c=64 against bare, batching's gain, its cost at c=1.
MIN_RPS_VS_BARE = 0.5
MAX_P99_VS_BARE = 3.0
MIN_ON_VS_OFF_RPS = 2.0
# The review inbox's capture (issue 31): at c=64, at least 95% of the throughput and p99 within 10%.
MIN_REVIEW_VS_ON_RPS = 0.95
MAX_REVIEW_VS_ON_P99 = 1.10
# The numpy runtime against torch's int8 network (issue 30): at c=64, at least its throughput.
MIN_ON_VS_TORCH_RPS = 1.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], metavar="C")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], metavar="W")
    p.add_argument("--model", help="serve this model directory (default: train one now, ~20 s)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load per server before measuring")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: it shares 2 cores)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in s (counted as error)")
    p.add_argument(
        "--engine", choices=[loadgen.WRK, loadgen.ASYNCIO], help="load generator (default: wrk if installed)"
    )
    p.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for both real servers"
    )
    p.add_argument("--review", action="store_true", help="also the service with the review inbox on")
    p.add_argument("--torch", action="store_true", help="also the service on torch's int8 network")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each server per concurrency, in alternating order; the table gives their medians",
    )
    args = p.parse_args()
    if min(args.concurrency) < 1 or min(args.workers) < 1 or args.duration <= 0:
        p.error("concurrency, workers and duration must be positive")
    return args


def wait_all_workers(server: su.Server, workers: int) -> None:
    """/readyz answers once one worker is up; ask on fresh connections until several in a row say so."""
    import urllib.request

    streak, deadline = 0, time.monotonic() + 120
    while streak < 10 * workers and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as resp:
                streak = streak + 1 if resp.status == 200 else 0
        except OSError:
            streak = 0
            time.sleep(0.2)


def start_servers(
    model: Path, workers: int, env: dict[str, str], tmp: Path, kinds: tuple[str, ...] = KINDS
) -> dict[str, su.Server]:
    """The servers for one worker count; whatever started is stopped if a later one fails."""
    servers: dict[str, su.Server] = {}
    try:
        for kind in kinds:
            if kind == BARE:
                servers[kind] = su.start_bare(workers, tmp, kind=kind)
                continue
            extra = dict(env)
            if kind == OFF:
                extra["INTENTLY_BATCH_MAX_SIZE"] = "1"
            if kind == REVIEW:  # the inbox beside the served model directory: a store of its own
                extra["INTENTLY_REVIEW"] = "true"
                extra["INTENTLY_MODEL_STORE"] = tempfile.mkdtemp(prefix="review-store-", dir=tmp)
            if workers > 1:  # keep the metrics scratch dir inside our temp dir, so it is removed
                metrics_dir = Path(tempfile.mkdtemp(prefix=f"prom-{kind}-", dir=tmp))
                extra["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            servers[kind] = su.start_real(model, workers, tmp, extra, kind=kind, torch_path=kind == TORCH)
        for server in servers.values():
            wait_all_workers(server, workers)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def find(rows: list[dict[str, Any]], workers: int, conc: int, kind: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if (r["workers"], r["concurrency"], r["server"]) == (workers, conc, kind)), None
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(rows: list[dict[str, Any]], workers: int) -> list[str]:
    """One line per target at this worker count; 'n/a' when its runs were not part of this run."""
    lines = []
    on64, bare64, off64 = (find(rows, workers, 64, k) for k in (ON, BARE, OFF))
    on1, off1 = find(rows, workers, 1, ON), find(rows, workers, 1, OFF)
    if on64 and bare64:
        r = on64["rps"] / bare64["rps"]
        lines.append(
            f"c=64 throughput on/bare = {r:.2f} (>= {MIN_RPS_VS_BARE})  {verdict(r >= MIN_RPS_VS_BARE)}"
        )
        r = on64["p99_ms"] / bare64["p99_ms"]
        lines.append(f"c=64 p99 on/bare = {r:.2f} (<= {MAX_P99_VS_BARE})  {verdict(r <= MAX_P99_VS_BARE)}")
        lines.append(f"c=64 batch-on errors = {on64['errors']} (== 0)  {verdict(on64['errors'] == 0)}")
    else:
        lines.append("c=64 vs bare: n/a (c=64 not run)")
    if on64 and off64:
        r = on64["rps"] / off64["rps"]
        lines.append(
            f"c=64 throughput on/off = {r:.2f} (>= {MIN_ON_VS_OFF_RPS})  {verdict(r >= MIN_ON_VS_OFF_RPS)}"
        )
    else:
        lines.append("c=64 on vs off: n/a (c=64 not run)")
    if on1 and off1:
        ok = on1["p50_ms"] <= off1["p50_ms"]
        lines.append(
            f"c=1 p50 on {on1['p50_ms']:.2f} ms vs off {off1['p50_ms']:.2f} ms "
            f"(on <= off; ratio {on1['p50_ms'] / off1['p50_ms']:.2f})  {verdict(ok)}"
        )
    else:
        lines.append("c=1 p50 on vs off: n/a (c=1 not run)")
    review64 = find(rows, workers, 64, REVIEW)
    if review64 and on64:
        lines += compared("review-on", review64, "batch-on", on64, MIN_REVIEW_VS_ON_RPS, MAX_REVIEW_VS_ON_P99)
    torch64 = find(rows, workers, 64, TORCH)
    if torch64 and on64:
        lines += compared("batch-on", on64, "torch-int8", torch64, MIN_ON_VS_TORCH_RPS)
    return lines


def compared(
    name: str, row: dict[str, Any], base_name: str, base: dict[str, Any], min_rps: float, max_p99: float = 0.0
) -> list[str]:
    """Target lines at c=64 for `row` against `base`: throughput ratio (and p99's, with `max_p99`),
    and the errors of the one that is not batch-on (whose errors have a line of their own)."""
    r = row["rps"] / base["rps"]
    lines = [f"c=64 throughput {name}/{base_name} = {r:.2f} (>= {min_rps})  {verdict(r >= min_rps)}"]
    if max_p99:
        r = row["p99_ms"] / base["p99_ms"]
        lines.append(f"c=64 p99 {name}/{base_name} = {r:.2f} (<= {max_p99})  {verdict(r <= max_p99)}")
    for kind, run in ((name, row), (base_name, base)):
        if kind != ON:
            lines.append(f"c=64 {kind} errors = {run['errors']} (== 0)  {verdict(run['errors'] == 0)}")
    return lines


def run_worker_count(
    model: Path, workers: int, env: dict[str, str], tmp: Path, texts: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every concurrency against the three servers of one worker count, which are stopped after."""

    def load(url: str, conc: int, seconds: float) -> dict[str, Any]:
        return loadgen.measure(url, texts, conc, seconds, args.timeout, args.engine, args.wrk_threads)

    rows = []
    kinds = (ON, *([REVIEW] if args.review else []), *([TORCH] if args.torch else []), OFF, BARE)
    servers = start_servers(model, workers, env, tmp, kinds)
    try:
        for server in servers.values():
            load(server.url, 16, args.warmup)
        for conc in args.concurrency:
            for rep in range(args.repeat):
                # Alternating order: a server measured first in one round is measured last in the next.
                for kind in kinds if rep % 2 == 0 else kinds[::-1]:
                    res = load(servers[kind].url, conc, args.duration)
                    row = {"workers": workers, "concurrency": conc, "server": kind, "round": rep}
                    rows.append({**row, **res})
                    print(
                        f"  w={workers} c={conc:<3} {kind:<9} {res['rps']:9.0f} req/s"
                        f"  p50 {res['p50_ms']:7.2f} ms  p99 {res['p99_ms']:7.2f} ms  errors {res['errors']}",
                        flush=True,
                    )
    finally:
        for server in servers.values():
            server.stop()
    return rows


def medians(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server, worker count and concurrency: the median of its rounds (errors summed)."""
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["workers"], r["concurrency"], r["server"]), []).append(r)
    out = []
    for (workers, conc, kind), runs in groups.items():
        merged = {**runs[0], "workers": workers, "concurrency": conc, "server": kind, "rounds": len(runs)}
        for key in ("rps", "p50_ms", "p99_ms"):
            merged[key] = statistics.median(r[key] for r in runs)
        merged["errors"] = sum(r["errors"] for r in runs)
        merged.pop("round", None)
        out.append(merged)
    return out


def main() -> None:
    args = parse_args()
    su.install_signal_handlers()
    env = su.parse_env(args.env)
    texts = utterances()
    rows: list[dict[str, Any]] = []
    facts = su.machine_facts()
    started = time.perf_counter()
    try:
        with (
            su.model_dir(args.model) as model,
            tempfile.TemporaryDirectory(prefix="intently-bench-http-") as t,
        ):
            for workers in args.workers:
                rows += run_worker_count(model, workers, env, Path(t), texts, args)
    finally:
        su.kill_all()

    runs, rows = rows, medians(rows)
    table_rows = []
    for r in rows:
        bare = find(rows, r["workers"], r["concurrency"], BARE)
        table_rows.append(
            [
                r["server"],
                r["workers"],
                r["concurrency"],
                f"{r['rps']:.0f}",
                fmt(r["p50_ms"]),
                fmt(r["p99_ms"]),
                r["errors"],
                fmt(ratio(r["rps"], bare and bare["rps"])),
                fmt(ratio(r["p99_ms"], bare and bare["p99_ms"])),
            ]
        )
    print()
    print(
        table(
            ["server", "W", "c", "req/s", "p50 ms", "p99 ms", "errors", "rps÷bare", "p99÷bare"],
            table_rows,
        )
    )
    summary: dict[str, list[str]] = {}
    for workers in args.workers:
        summary[str(workers)] = targets(rows, workers)
        tag = "targets" if workers == 1 else "for reference (targets are at 1 worker)"
        print(f"\nworkers={workers}, {tag}:")
        for line in summary[str(workers)]:
            print("  " + line)
    elapsed = time.perf_counter() - started
    payload = {
        "facts": {**facts, "args": vars(args), "texts": texts, "seconds": round(elapsed, 1)},
        "engine": rows[0]["engine"] if rows else None,
        "runs": rows,
        "rounds": runs,
        "targets": summary,
    }
    path = write_results("http", payload)
    print(f"\n{len(rows)} runs in {elapsed:.0f} s; results in {path.relative_to(su.ROOT)}")


if __name__ == "__main__":
    main()
