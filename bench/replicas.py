"""Two replicas on one PostgreSQL against two replicas on one shared store directory, on one machine.

    PYTHONPATH=. .venv/bin/python -m bench.replicas [--swaps 20] [--seconds 20] [--jobs 5] [--seed DIR]

Four `intently serve` processes run at once: replicas A and B on a throwaway PostgreSQL
server (tests/support/postgres.py; each replica with a cache directory of its own), and
replicas A and B of the baseline, the directory backend, sharing one store directory and
polling its active pointer every reload_interval (1 s). Every figure is measured on both
pairs back to back, so background load on a shared machine hits both:

1. swap time: N activations through A's admin API, alternating between two versions, each
   after a random pause of up to 1 s (so activations land anywhere in the baseline's polling
   cycle); the time from the call's return until B (and A) answers a /v1/classify on a fresh
   connection with the new version, polled every 5 ms. The call itself lasts as long as A
   takes to load the version, shown beside. The two pairs take turns, one activation each.
2. failures under load: 8 threads classify against A and B (keep-alive) for at least
   --seconds while N swaps run, activations on A and rollbacks on B in turn; requests,
   failures, req/s, and the swap time of the replica that was not called. Both pairs at
   once, each with its own 8 threads, so both see the same machine.
3. a job's claim latency: M small training jobs (activate "never") submitted to A one after
   another; from the POST's return to the first GET /v1/training-jobs/{id} (every 10 ms)
   that no longer says "queued". Both pairs at once. Run first: each pair's first job gives
   the second version that 1 and 2 swap to.
4. PostgreSQL only: the server stopped for --down seconds under the same traffic; failed
   classify requests, and seconds after its restart until both admin APIs answer 200.

The replicas start from a seed store (INTENTLY_DEFAULT_SEED_STORE) so that none trains the
built-in model: --seed DIR reuses one (a directory store with an active version), else one
is built first (about a minute). Needs PostgreSQL's server binaries, or a server of one's
own at $INTENTLY_TEST_DATABASE_URL (then part 4 is skipped). Results: the table here and
bench/results/replicas.json.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import server_util as su
from bench.common import table, write_results
from store.directory import DirectoryStore
from tests.support.postgres import PostgresServer
from tests.support.traffic import Traffic
from training.default_model import SEED_ENV

PG, DIR = "postgresql", "directory"
BACKENDS = (PG, DIR)
TOKEN = "bench-replicas-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TARGET_SWAP_S = 2.0  # issue 19: every replica serves an activated version within 2 s
SWAP_POLL_S = 0.005
RELOAD_INTERVAL_S = 1.0  # the directory backend polls its pointer this often (the default)
JOB_POLL_S = 0.010
SWAP_TIMEOUT_S = 15.0
JOB_TIMEOUT_S = 300.0
# Tiny on purpose: the figure is the queue's, not training's.
JOB_OPTIONS = {"epochs": 1, "min_steps": 0, "vectors": "", "teacher": ""}
JOB_INTENTS, JOB_PER_INTENT = 6, 5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--swaps", type=int, default=20, help="activations per backend in parts 1 and 2")
    p.add_argument(
        "--seconds", type=float, default=20.0, help="seconds of traffic in part 2, at least (default 20)"
    )
    p.add_argument("--jobs", type=int, default=5, help="training jobs per backend in part 3 (default 5)")
    p.add_argument("--threads", type=int, default=8, help="classify threads in parts 2 and 4 (default 8)")
    p.add_argument("--down", type=float, default=3.0, help="seconds PostgreSQL stays down in part 4")
    p.add_argument("--seed", metavar="DIR", help="a store holding the built-in model (default: build one)")
    args = p.parse_args()
    if args.swaps < 2 or args.jobs < 1 or args.threads < 1 or args.seconds <= 0 or args.down <= 0:
        p.error("--swaps must be at least 2; --jobs, --threads, --seconds and --down positive")
    return args


# --- figures -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 20 values, p95 is the 19th."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(values: list[float | None]) -> dict[str, Any]:
    """Median, p95 and max in ms of the values that arrived; `missed` counts timeouts."""
    got = [v for v in values if v is not None]
    out: dict[str, Any] = {"n": len(values), "missed": len(values) - len(got)}
    if got:
        out |= {
            "median_ms": 1000 * statistics.median(got),
            "p95_ms": 1000 * percentile(got, 95),
            "max_ms": 1000 * max(got),
        }
    return out


def ms(stats: dict[str, Any], key: str) -> str:
    if key not in stats:
        return "-"
    missed = f" ({stats['missed']} over {SWAP_TIMEOUT_S:.0f} s)" if stats["missed"] else ""
    return f"{stats[key]:,.0f} ms{missed}"


# --- replicas ------------------------------------------------------------------------------


class Pair:
    """Replicas A and B of one backend, and the two versions they swap between."""

    def __init__(self, backend: str, a: su.Server, b: su.Server):
        self.backend, self.a, self.b = backend, a, b
        self.versions: list[str] = []

    @property
    def servers(self) -> tuple[su.Server, su.Server]:
        return self.a, self.b


def start_pair(backend: str, tmp: Path, seed: Path, database_url: str | None) -> Pair:
    """Start both replicas at once (as an orchestrator would), then wait until both are ready."""
    servers: list[su.Server] = []
    try:
        for name in ("a", "b"):
            store = tmp / f"{backend}-cache-{name}" if database_url else tmp / f"{backend}-store"
            env = {
                "INTENTLY_MODEL_STORE": str(store),
                # Empty, not unset: a URL in the caller's environment must not reach the baseline.
                "INTENTLY_DATABASE_URL": database_url or "",
                "INTENTLY_ADMIN_TOKEN": TOKEN,
                SEED_ENV: str(seed),
                "OMP_NUM_THREADS": "1",
            }
            port = su.free_port()
            cmd = [str(su.VENV_BIN / "intently"), "serve", "--port", str(port)]
            servers.append(su.Server(f"{backend}-{name}", cmd, port, env, tmp))
        for server in servers:
            server.wait_ready(timeout=300)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return Pair(backend, servers[0], servers[1])


def fresh_connections() -> httpx.Client:
    # A new connection for every request, but one client: httpx.post() builds a client (and its
    # TLS context) each call, which cost about 40 ms here, more than the poll interval.
    return httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))


def served(http: httpx.Client, url: str) -> str | None:
    """The version a classify answers with; None on any failure."""
    try:
        r = http.post(f"{url}/v1/classify", json={"text": "what time is it"})
    except httpx.HTTPError:
        return None
    return str(r.json()["model_version"]) if r.status_code == 200 else None


def until_served(
    http: httpx.Client, url: str, version: str, since: float, timeout: float = SWAP_TIMEOUT_S
) -> float | None:
    """Seconds from `since` until a classify answer with `version` arrived; None after `timeout`."""
    while time.monotonic() - since < timeout:
        if served(http, url) == version:
            return time.monotonic() - since
        time.sleep(SWAP_POLL_S)
    return None


def round_trip(url: str, n: int = 20) -> float:
    """Median seconds of one poll (a classify on a fresh connection): the swap times' resolution."""
    times = []
    with fresh_connections() as http:
        for _ in range(n):
            started = time.monotonic()
            served(http, url)
            times.append(time.monotonic() - started)
    return statistics.median(times)


def admin(method: str, url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{url}{path}", headers=AUTH, timeout=30, **kwargs)


def active(pair: Pair) -> str:
    r = admin("GET", pair.a.url, "/v1/models")
    r.raise_for_status()
    return str(r.json()["active"])


def activate(url: str, version: str) -> str:
    r = admin("POST", url, f"/v1/models/{version}/activate")
    if r.status_code != 200:
        raise RuntimeError(f"activate {version} on {url}: {r.status_code} {r.text[:300]}")
    return str(r.json()["active"])


def rollback(url: str) -> str:
    r = admin("POST", url, "/v1/models/rollback")
    if r.status_code != 200:
        raise RuntimeError(f"rollback on {url}: {r.status_code} {r.text[:300]}")
    return str(r.json()["active"])


def other(pair: Pair, version: str) -> str:
    return pair.versions[1] if version == pair.versions[0] else pair.versions[0]


# --- 1. swap time --------------------------------------------------------------------------


class Watcher:
    """Times one swap of a pair: after the admin call returns, both replicas are polled at once."""

    def __init__(self, pair: Pair):
        self.pair = pair
        self.pool = ThreadPoolExecutor(2)
        # Built before any call: building one costs tens of milliseconds.
        self.clients = [fresh_connections() for _ in pair.servers]

    def swap(self, call: Callable[[], str], target: str) -> dict[str, float | None]:
        """Make the call; its duration, and for A and B seconds from its return until they served `target`.

        Polling starts only once the call returned, so that it does not slow the loading the call
        waits for; a replica that was already serving `target` then answers with it at the first poll.
        """
        started = time.monotonic()
        answered = call()
        since = time.monotonic()
        if answered != target:
            raise RuntimeError(f"{self.pair.backend}: the call made {answered} active, not {target}")
        polls = [
            self.pool.submit(until_served, http, server.url, target, since)
            for http, server in zip(self.clients, self.pair.servers, strict=True)
        ]
        a, b = (poll.result() for poll in polls)
        call_s = since - started
        return {
            "call": call_s,
            "a": a,
            "b": b,
            "a_from_call": None if a is None else a + call_s,
            "b_from_call": None if b is None else b + call_s,
        }

    def close(self) -> None:
        self.pool.shutdown()
        for http in self.clients:
            http.close()


def pause(rng: random.Random) -> None:
    # Right after a swap the baseline's pollers have just looked: without a random wait, the next
    # activation would land at the same point of their 1 s cycle every time.
    time.sleep(rng.uniform(0.0, RELOAD_INTERVAL_S))


def swap_times(pairs: dict[str, Pair], n: int, rng: random.Random) -> dict[str, dict[str, Any]]:
    """N activations on A of each pair, the pairs taking turns, one at a time, without other traffic."""
    keys = ("call", "a", "b", "b_from_call")
    times: dict[str, dict[str, list[float | None]]] = {k: {key: [] for key in keys} for k in pairs}
    watchers = {backend: Watcher(pair) for backend, pair in pairs.items()}
    try:
        for i in range(n):
            for backend, pair in pairs.items():
                pause(rng)
                target = other(pair, active(pair))
                swap = watchers[backend].swap(lambda p=pair, t=target: activate(p.a.url, t), target)
                for key in keys:
                    times[backend][key].append(swap[key])
            if (i + 1) % 5 == 0:
                print(f"  swaps: {i + 1}/{n}", flush=True)
    finally:
        for watcher in watchers.values():
            watcher.close()
    return {
        backend: {
            **{key: summary(t[key]) for key in keys},
            "poll_round_trip_ms": 1000 * round_trip(pairs[backend].b.url),
            "raw_s": t,
        }
        for backend, t in times.items()
    }


# --- 2. failures under load ----------------------------------------------------------------


def under_load(pair: Pair, n: int, seconds: float, threads: int, rng: random.Random) -> dict[str, Any]:
    """Traffic for at least `seconds` while n swaps run: activate on A, then roll back on B, in turn."""
    other_replica: list[float | None] = []
    from_call: list[float | None] = []
    watcher = Watcher(pair)
    try:
        with Traffic([s.url for s in pair.servers], threads) as traffic:
            started = time.monotonic()
            for i in range(n):
                pause(rng)
                target = other(pair, active(pair))
                if i % 2 == 0:
                    swap = watcher.swap(lambda t=target: activate(pair.a.url, t), target)
                    other_replica.append(swap["b"])
                    from_call.append(swap["b_from_call"])
                else:
                    swap = watcher.swap(lambda: rollback(pair.b.url), target)
                    other_replica.append(swap["a"])
                    from_call.append(swap["a_from_call"])
            time.sleep(max(0.0, started + seconds - time.monotonic()))
    finally:
        watcher.close()
    return {
        **traffic.result(),
        "swap_other_replica": summary(other_replica),
        "swap_other_replica_from_call": summary(from_call),
        "raw_s": {"after_return": other_replica, "after_call": from_call},
    }


def both_under_load(pairs: dict[str, Pair], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Part 2 on both pairs at the same time: the same machine load for both, in half the time."""
    with ThreadPoolExecutor(len(pairs)) as pool:
        runs = {
            backend: pool.submit(
                under_load, pair, args.swaps, args.seconds, args.threads, random.Random(f"{backend}-load")
            )
            for backend, pair in pairs.items()
        }
        return {backend: run.result() for backend, run in runs.items()}


# --- 3. a job's claim latency --------------------------------------------------------------


def job_examples() -> list[dict[str, str]]:
    """A few rows of each of the first intents of the built-in data: a small, real training set."""
    picked: dict[str, list[str]] = {}
    with open(su.ROOT / "data" / "assistant" / "train.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["intent"] not in picked and len(picked) == JOB_INTENTS:
                continue
            texts = picked.setdefault(row["intent"], [])
            if len(texts) < JOB_PER_INTENT:
                texts.append(row["text"])
    return [{"text": t, "intent": intent} for intent, texts in picked.items() for t in texts]


def one_job(pair: Pair, examples: list[dict[str, str]]) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST's return until the job was seen claimed, and its final record."""
    body = {"examples": examples, "mode": "replace", "activate": "never", "options": JOB_OPTIONS}
    r = admin("POST", pair.a.url, "/v1/training-jobs", json=body)
    if r.status_code != 202:
        raise RuntimeError(f"job not accepted by {pair.a.url}: {r.status_code} {r.text[:300]}")
    since = time.monotonic()
    job_id = r.json()["id"]
    claimed: float | None = None
    while True:
        record = admin("GET", pair.a.url, f"/v1/training-jobs/{job_id}").json()
        now = time.monotonic()
        if claimed is None and record["state"] != "queued":
            claimed = now - since
        if record["state"] in ("succeeded", "failed"):
            break
        if now - since > JOB_TIMEOUT_S:
            raise TimeoutError(f"job {job_id} on {pair.backend} not finished in {JOB_TIMEOUT_S:.0f} s")
        time.sleep(JOB_POLL_S if claimed is None else 0.2)
    if record["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} on {pair.backend} failed: {record.get('error')}")
    assert claimed is not None
    return claimed, record


def jobs_one_after_another(pair: Pair, m: int) -> list[float | None]:
    examples = job_examples()
    times: list[float | None] = []
    for i in range(m):
        seconds, record = one_job(pair, examples)
        times.append(seconds)
        if len(pair.versions) < 2:
            pair.versions.append(str(record["version"]))
        print(f"  {pair.backend}: job {i + 1}/{m} claimed after {1000 * seconds:.0f} ms", flush=True)
    return times


def claim_latency(pairs: dict[str, Pair], m: int) -> dict[str, dict[str, Any]]:
    """M jobs on each pair, the pairs at the same time; each pair's first job gives its second version."""
    with ThreadPoolExecutor(len(pairs)) as pool:
        runs = {backend: pool.submit(jobs_one_after_another, pair, m) for backend, pair in pairs.items()}
        times = {backend: run.result() for backend, run in runs.items()}
    return {backend: {**summary(t), "raw_s": t} for backend, t in times.items()}


# --- 4. a PostgreSQL restart ---------------------------------------------------------------


def database_restart(pair: Pair, pg: PostgresServer, down: float, threads: int) -> dict[str, Any]:
    """Stop PostgreSQL for `down` seconds under traffic; seconds after its start until admin is back."""
    back: dict[str, float | None] = {}
    with Traffic([s.url for s in pair.servers], threads) as traffic:
        time.sleep(1.0)
        pg.stop()
        before = traffic.ok
        time.sleep(down)
        served_while_down = traffic.ok - before
        pg.start()
        since = time.monotonic()
        for server in pair.servers:
            back[server.kind] = None
            while time.monotonic() - since < 60:
                try:
                    if admin("GET", server.url, "/v1/models").status_code == 200:
                        back[server.kind] = time.monotonic() - since
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        time.sleep(1.0)
    admin_back = [v for v in back.values() if v is not None]
    return {
        **traffic.result(),
        "down_s": down,
        "served_while_down": served_while_down,
        "admin_back_s": back,
        "admin_back_max_s": max(admin_back) if len(admin_back) == len(back) else None,
    }


# --- setup ---------------------------------------------------------------------------------


@contextmanager
def seed_store(given: str | None, tmp: Path) -> Iterator[Path]:
    if given:
        path = Path(given).resolve()
        if DirectoryStore(path).active() is None:
            raise SystemExit(f"--seed {given}: not a model store with an active version")
        yield path
        return
    import torch

    from training.default_model import ensure_default  # torch: only when a seed is built here

    # One thread: two on a busy 2-core machine train several times slower (see bench.common --threads).
    torch.set_num_threads(1)
    path = tmp / "seed"
    print("building the seed store: the built-in model (about a minute) ...", flush=True)
    started = time.perf_counter()
    ensure_default(DirectoryStore(path))
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    yield path


@contextmanager
def database(stack: ExitStack) -> Iterator[tuple[PostgresServer, str]]:
    """A server of our own (or the one at $INTENTLY_TEST_DATABASE_URL) and an empty database on it."""
    pg = PostgresServer.from_environment()
    if pg is None:
        raise SystemExit(
            "no PostgreSQL: install its server binaries (initdb, postgres) or set INTENTLY_TEST_DATABASE_URL"
        )
    stack.enter_context(pg)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    try:
        yield pg, url
    finally:
        if pg.running:
            pg.drop_database(name)


def timed(what: str, func: Callable[[], Any]) -> Any:
    print(f"{what} ...", flush=True)
    started = time.perf_counter()
    result = func()
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return result


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    swaps, load, jobs = results["swaps"], results["load"], results["jobs"]
    rows: list[list[Any]] = []

    def add(label: str, stats: dict[str, dict[str, Any]], key: str) -> None:
        rows.append([label, *(ms(stats[k], key) for k in BACKENDS)])

    for key, label in (("median_ms", "median"), ("p95_ms", "p95"), ("max_ms", "max")):
        add(
            f"swap: B serves it, after A's activate returned, {label}",
            {k: swaps[k]["b"] for k in BACKENDS},
            key,
        )
    for key, label in (("median_ms", "median"), ("max_ms", "max")):
        add(
            f"swap: B serves it, after the call was made, {label}",
            {k: swaps[k]["b_from_call"] for k in BACKENDS},
            key,
        )
    add(
        "swap: the activate call on A (A loads first), median",
        {k: swaps[k]["call"] for k in BACKENDS},
        "median_ms",
    )
    add("swap: A serves it, after its call returned, max", {k: swaps[k]["a"] for k in BACKENDS}, "max_ms")
    rows.append(
        [
            "one poll's round trip (the resolution), median",
            *(f"{swaps[k]['poll_round_trip_ms']:.0f} ms" for k in BACKENDS),
        ]
    )
    t = args.threads
    rows.append(
        [
            f"under load ({t} threads a pair, both at once): requests",
            *(f"{load[k]['requests']:,}" for k in BACKENDS),
        ],
    )
    rows.append(["under load: failed requests", *(load[k]["failures"] for k in BACKENDS)])
    rows.append(["under load: req/s", *(f"{load[k]['rps']:,.0f}" for k in BACKENDS)])
    for key, label in (("median_ms", "median"), ("max_ms", "max")):
        add(
            f"under load: the other replica, after the call returned, {label}",
            {k: load[k]["swap_other_replica"] for k in BACKENDS},
            key,
        )
    for key, label in (("median_ms", "median"), ("max_ms", "max")):
        add(
            f"under load: the other replica, after the call was made, {label}",
            {k: load[k]["swap_other_replica_from_call"] for k in BACKENDS},
            key,
        )
    for key, label in (("median_ms", "median"), ("max_ms", "max")):
        rows.append([f"job claim latency: {label}", *(ms(jobs[k], key) for k in BACKENDS)])
    restart = results.get("restart")
    if restart:
        rows.append(
            [
                f"PostgreSQL down {restart['down_s']:g} s: failed classify requests",
                f"{restart['failures']} of {restart['requests']:,}",
                "n/a",
            ]
        )
        back = restart["admin_back_max_s"]
        rows.append(
            ["  admin API 200 again, after the restart", "-" if back is None else f"{back:.2f} s", "n/a"]
        )
    return table(["figure", "PostgreSQL (NOTIFY)", "directory baseline (1 s polling)"], rows)


def worst_ms(stats: dict[str, Any]) -> float:
    return float("inf") if stats["missed"] or "max_ms" not in stats else float(stats["max_ms"])


def verdicts(results: dict[str, Any]) -> list[str]:
    """The targets, on the PostgreSQL figures; the baseline is there to compare, not to pass."""
    swaps = results["swaps"][PG]
    after_return, after_call = worst_ms(swaps["b"]), worst_ms(swaps["b_from_call"])
    # The target counts from the call's return, as the e2e test does; from the call itself is shown beside.
    ok = max(after_return, worst_ms(swaps["a"])) <= 1000 * TARGET_SWAP_S
    failures = results["load"][PG]["failures"] + results.get("restart", {}).get("failures", 0)
    return [
        f"\nboth replicas serve an activated version within {TARGET_SWAP_S:g} s of the call's return: "
        f"B's worst {after_return:,.0f} ms  {'PASS' if ok else 'FAIL'}"
        f" (from the call itself: {after_call:,.0f} ms)",
        f"no failed classify request on PostgreSQL: {failures}  {'PASS' if failures == 0 else 'FAIL'}",
    ]


def main() -> None:
    args = parse_args()
    su.install_signal_handlers()
    facts = su.machine_facts()
    started = time.perf_counter()
    results: dict[str, Any] = {}
    rng = random.Random(0)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="intently-bench-replicas-") as t,
            ExitStack() as stack,
        ):
            tmp = Path(t)
            seed = stack.enter_context(seed_store(args.seed, tmp))
            pg, url = stack.enter_context(database(stack))
            pairs: dict[str, Pair] = {}
            try:
                pairs[PG] = timed("starting 2 replicas on PostgreSQL", lambda: start_pair(PG, tmp, seed, url))
                pairs[DIR] = timed(
                    "starting 2 replicas on one store directory", lambda: start_pair(DIR, tmp, seed, None)
                )
                for pair in pairs.values():
                    pair.versions = [active(pair)]
                results["jobs"] = timed(
                    f"3. claim latency: {args.jobs} jobs on each backend",
                    lambda: claim_latency(pairs, args.jobs),
                )
                results["swaps"] = timed(
                    f"1. swap time: {args.swaps} activations on each backend",
                    lambda: swap_times(pairs, args.swaps, rng),
                )
                results["load"] = timed(
                    f"2. traffic and {args.swaps} swaps on both backends at once",
                    lambda: both_under_load(pairs, args),
                )
                if pg.can_restart:
                    results["restart"] = timed(
                        f"4. PostgreSQL stopped for {args.down:g} s under traffic",
                        lambda: database_restart(pairs[PG], pg, args.down, args.threads),
                    )
                else:
                    print("4. skipped: the server at $INTENTLY_TEST_DATABASE_URL is not ours to restart")
            except Exception:  # a failure, not Ctrl-C: show what the replicas said
                for pair in pairs.values():
                    for server in pair.servers:
                        print(f"--- {server.kind} log, last lines:\n{server.tail()}")
                raise
            finally:
                for pair in pairs.values():
                    for server in pair.servers:
                        server.stop()
    finally:
        su.kill_all()

    print()
    print(report(results, args))
    for line in verdicts(results):
        print(line)
    elapsed = time.perf_counter() - started
    path = write_results(
        "replicas", {"facts": {**facts, "args": vars(args), "seconds": round(elapsed, 1)}, **results}
    )
    print(f"\n{elapsed:.0f} s in all; results in {path.relative_to(su.ROOT)}")


if __name__ == "__main__":
    main()
