"""Shared fixtures: small real models trained once per session, a real server runner, and a real
PostgreSQL server with a fresh database per test (tests/support/postgres.py)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from model.predictor import Predictor
from store.directory import DirectoryStore
from store.model_store import ModelStore, open_store
from tests.ci import missing_part
from tests.support.postgres import PostgresServer
from tests.support.workers import (  # first: sets torch's threads
    directory_per_run,
    group_scheduler,
    once_per_run,
    taking_turns,
    worker_id,
    write_groups,
)
from training.readers import Example, NluData, read_data, read_file
from training.train import TrainConfig, TrainResult, train

ROOT = Path(__file__).resolve().parents[1]
ASSISTANT = ROOT / "data" / "assistant"
SHARED_DATA = ROOT.parent / "shared" / "data"
# Examples of an intent the built-in set lacks (`order_food`): what a team adds when retraining.
NEW_INTENT = [
    "order me a pizza",
    "I want some sushi delivered",
    "get me a burger from the nearest place",
    "can you order takeout for dinner",
    "food delivery please",
    "i am hungry, order something to eat",
    "order thai food to my place",
    "have a pizza delivered to my house",
]

# Pretrained vectors and the teacher are tested on their own (tests/training/test_pretrained.py);
# elsewhere they would only add the encoder's load and augmented rows to every training.
NO_PRETRAINED = {"vectors": "", "encoder": "", "teacher": ""}
# Small and quick, but a real network trained on real data.
SMALL = dict(
    embed_dim=64,
    hidden_dim=64,
    ngram_buckets=5000,
    bag_buckets=20_000,
    epochs=12,
    min_steps=0,
    seed=0,
    **NO_PRETRAINED,
)


# --- the two tiers ---------------------------------------------------------------------------
# `make check` runs `-m "not slow"`; `make test` and CI run everything. A test is slow when it
# needs a real part: each kind has a marker of its own (pyproject.toml), and any of them makes
# the test `slow`. The fixtures below mark a test by what it uses, so a new test that starts a
# server or uses PostgreSQL lands in the right tier without saying so.
SLOW_KINDS = ("server", "process", "postgres", "browser", "load", "full_training", "own_training")
SLOW_FIXTURES = {
    "serve": "server",  # `intently serve` as a real process
    "postgres": "postgres",  # a real PostgreSQL server
    "default_store_template": "full_training",  # the built-in model, trained at its real size
    "browser": "browser",  # Chromium
}


# --- several processes (pytest-xdist: `make check` and `make test` run `-n 2 --dist loadgroup`) ---
# Tests that share something costly run in one worker: a module's own server, browser or model (a
# module-scoped fixture) is made once, and the built-in model trains in the worker whose tests use
# it, which no other then waits for. The session's small models are trained once per run
# (tests/support/workers.py). In a run of several workers, the slow tier's tests are handed out
# first, so that the last to finish are short ones.
DEFAULT_STORE_GROUP = "default-store"


def _worker_group(item: pytest.Item) -> str | None:
    if "default_store_template" in getattr(item, "fixturenames", ()):
        return DEFAULT_STORE_GROUP
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    if any(defs and defs[-1].scope == "module" for defs in definitions):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: unknown without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    return group_scheduler(config, log) if config.getoption("dist") == "loadgroup" else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        kinds = {kind for fixture, kind in SLOW_FIXTURES.items() if fixture in fixtures}
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("open_replica") == "postgres":
            kinds.add("postgres")  # the store's own fixture opens the database by name
        for kind in kinds:
            item.add_marker(kind)
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker("slow")
    if worker_id() is not None:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow ones first
        groups = {item.nodeid: group for item in items if (group := _worker_group(item)) is not None}
        write_groups(config, groups)
    config.stash[_USED_FIXTURES] = {name for item in items for name in getattr(item, "fixturenames", ())}


@pytest.fixture(autouse=True)
def _load_tests_run_alone(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under xdist, a `load` test runs with no other test beside it: what it measures of a server
    (latency, memory once warmed up) must not be the share of the cores another test leaves it."""
    with taking_turns(tmp_path_factory, alone=request.node.get_closest_marker("load") is not None):
        yield


_USED_FIXTURES = pytest.StashKey[set[str]]()
# The session's small models, in batches of about equal training time: under xdist, worker k trains
# batch k as it starts (of those its run uses), instead of the first worker to need a model training
# it while another waits for it.
MODEL_BATCHES = (("small_result",), ("tagged_result", "rasa_bot"))


@pytest.fixture(scope="session", autouse=True)
def _models_trained_side_by_side(request: pytest.FixtureRequest) -> None:
    worker, count = worker_id(), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count < 2:
        return
    index = int(worker.removeprefix("gw"))
    used = request.config.stash.get(_USED_FIXTURES, set())
    for name in MODEL_BATCHES[index] if index < len(MODEL_BATCHES) else ():
        if name in used:
            request.getfixturevalue(name)


_TIER_SECONDS: dict[str, float] = {}
_TIER_TESTS: dict[str, set[str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # From the report's own markers: under xdist this runs in the controller, which collects nothing.
    tier = "slow" if "slow" in report.keywords else "quick"
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration
    _TIER_TESTS.setdefault(tier, set()).add(report.nodeid)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Each tier's time in this run (its tests' setup, call and teardown), so that CI's output
    shows the quick tier's share beside the total: `make check` runs only that share."""
    if not _TIER_SECONDS:
        return
    selects = {"quick": '-m "not slow"', "slow": "-m slow"}
    parts = [
        f"{tier} ({selects[tier]}): {len(_TIER_TESTS[tier])} tests, {_TIER_SECONDS[tier]:.1f} s"
        for tier in ("quick", "slow")
        if tier in _TIER_SECONDS
    ]
    workers = terminalreporter.config.getoption("numprocesses", default=None)
    if workers:  # under xdist, the tests' times added up over the workers, which ran side by side
        parts.append(f"summed over {workers} workers")
    terminalreporter.write_sep("=", "tiers: " + "; ".join(parts))


def shared_data(name: str) -> Path:
    """The public data set `name` beside the project (../shared/data), or a skip that says it is missing."""
    path = SHARED_DATA / name
    if not (path / "train.csv").is_file():
        pytest.skip(f"public data set {name} not found at {path} (only present beside the project)")
    return path


def small_config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{**SMALL, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def assistant_train() -> list[Example]:
    return read_file(ASSISTANT / "train.csv")


@pytest.fixture(scope="session")
def assistant_test() -> list[Example]:
    return read_file(ASSISTANT / "test.csv")


@pytest.fixture(scope="session")
def assistant_intents(assistant_train: list[Example]) -> list[Example]:
    """The built-in training rows without their entity spans.

    At the small size (12 epochs, no min_steps) a tagger trained jointly over the built-in
    set's 16 entity types learns few spans and costs the intent points the intent tests
    rely on. Joint tagging is tested on `tagged_result`; the default model trains on the spans.
    """
    return [replace(e, entities=()) for e in assistant_train]


@pytest.fixture(scope="session")
def small_result(assistant_intents: list[Example], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return once_per_run(tmp_path_factory, "small-result", lambda: train(assistant_intents, small_config()))


# A tiny annotated set, made from templates: the details of an alarm and of a weather request.
TIMES = ["6:30", "7", "noon", "8:15", "midnight", "5:45", "9", "10:20"]
CITIES = ["paris", "boston", "new york", "tokyo", "berlin", "san francisco", "oslo", "lima"]
ALARM = ["wake me up at [{}](time)", "set an alarm for [{}](time)", "alarm at [{}](time) please"]
WEATHER = ["weather in [{}](city)", "is it raining in [{}](city)", "how cold is [{}](city) today"]
GREET = ["hello", "hi there", "good morning", "hey", "hello friend", "hi", "howdy", "greetings"]


def entity_examples(times: list[str], cities: list[str]) -> list[Example]:
    from training.readers import parse_bytes

    lines = ["text,intent"]
    lines += [f"{t.format(v)},set_alarm" for t in ALARM for v in times]
    lines += [f"{t.format(v)},weather" for t in WEATHER for v in cities]
    lines += [f"{g},greet" for g in GREET]
    lines.append("how warm is [the big apple](city:new york),weather")  # a value of its own: a synonym
    return parse_bytes("\n".join(lines).encode(), "csv", "entities.csv")


@pytest.fixture(scope="session")
def tagged_result(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Trained on the first six times and cities; the last two of each are for testing."""
    # A few hundred small steps: 44 rows are one batch an epoch at the default size.
    cfg = small_config(min_steps=300, batch_size=16, refit_below=0, unknown_detector=False)
    examples = entity_examples(TIMES[:6], CITIES[:6])
    return once_per_run(tmp_path_factory, "tagged-result", lambda: train(examples, cfg))


def rasa_bot_files(root: Path) -> Path:
    """A small Rasa project's data/ as its team would write it: roles, a retrieval intent, a
    synonym, a lookup table, a regex, responses and a story; returns the data/ directory."""

    def city(name: str, role: str) -> str:
        return f'[{name}]{{"entity": "city", "role": "{role}"}}'

    pairs = list(zip(CITIES[:6], CITIES[2:8], strict=True))
    flights = [f"- fly from {city(a, 'departure')} to {city(b, 'destination')}" for a, b in pairs]
    flights += [f"- a flight to {city(b, 'destination')} from {city(a, 'departure')}" for a, b in pairs]
    flights += ["- status of flight [LH123](flight_number)", "- where is flight [BA9](flight_number)"]
    names = ["what is your name", "who are you", "what should i call you", "do you have a name"]
    ages = ["how old are you", "what is your age", "when were you born", "are you young"]
    nlu = "\n".join(
        [
            'version: "3.1"',
            "nlu:",
            "- intent: book_flight",
            "  examples: |",
            *(f"    {line}" for line in flights),
            "- intent: chitchat/ask_name",
            "  examples: |",
            *(f"    - {t}" for t in names),
            "- intent: chitchat/ask_age",
            "  examples: |",
            *(f"    - {t}" for t in ages),
            "- intent: greet",
            "  examples: |",
            *(f"    - {g}" for g in GREET),
            "- synonym: new york",
            "  examples: |",
            "    - nyc",
            "- lookup: city",
            "  examples: |",
            "    - reykjavik",
            "- regex: flight_number",
            "  examples: |",
            "    - \\b[A-Z]{2}[0-9]{1,4}\\b",
            "- regex: help",
            "  examples: |",
            "    - \\bhelp\\b",
        ]
    )
    responses = 'version: "3.1"\nresponses:\n  utter_chitchat/ask_name:\n  - text: I am a bot.\n'
    stories = 'version: "3.1"\nstories:\n- story: hi\n  steps:\n  - intent: greet\n'
    data = root / "data"
    data.mkdir(parents=True)
    (data / "nlu.yml").write_text(nlu + "\n", encoding="utf-8")
    (data / "responses.yml").write_text(responses, encoding="utf-8")
    (data / "stories.yml").write_text(stories, encoding="utf-8")
    return data


@pytest.fixture(scope="session")
def rasa_bot(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, NluData]:
    """A model of `rasa_bot_files`, trained as `intently train data/` trains it."""
    data = read_data([rasa_bot_files(tmp_path_factory.mktemp("rasa-bot"))])
    cfg = small_config(min_steps=300, batch_size=16, refit_below=0, unknown_detector=False)
    return once_per_run(tmp_path_factory, "rasa-bot", lambda: train(data.examples, cfg, nlu=data)), data


@pytest.fixture(scope="session")
def tagged_model_dir(tagged_result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.artifact import save

    return save(tagged_result.net, tagged_result.meta, tmp_path_factory.mktemp("models") / "tagged")


@pytest.fixture(scope="session")
def small_model_dir(small_result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.artifact import save

    return save(small_result.net, small_result.meta, tmp_path_factory.mktemp("models") / "small")


@pytest.fixture(scope="session")
def small_predictor(small_model_dir: Path) -> Predictor:
    return Predictor.load(small_model_dir)


@pytest.fixture(scope="session")
def small_store_template(small_result: TrainResult, assistant_train: list[Example], tmp_path_factory) -> Path:
    """A store whose active version is the small model, with its evaluation report: quick to build."""
    from training.evaluate import version_report_files

    root = tmp_path_factory.mktemp("small-store") / "store"
    store = DirectoryStore(root)
    files = version_report_files(small_result)
    store.activate(
        store.add(small_result.net, small_result.meta, assistant_train, small_result.valid_examples, files)
    )
    return root


@pytest.fixture(scope="session")
def tagged_store_template(tagged_result: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like small_store_template for the entity model: its report has entity scores (held-out spans)."""
    from training.evaluate import version_report_files

    root = tmp_path_factory.mktemp("tagged-store") / "store"
    store = DirectoryStore(root)
    files = version_report_files(tagged_result)
    data = entity_examples(TIMES[:6], CITIES[:6])  # what tagged_result was trained on
    version = store.add(tagged_result.net, tagged_result.meta, data, tagged_result.valid_examples, files)
    store.activate(version)
    return root


@pytest.fixture(scope="session")
def default_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the real built-in default model, trained once per run; never changed."""
    from training.default_model import ensure_default

    def fill(path: Path) -> None:
        ensure_default(DirectoryStore(path))

    return directory_per_run(tmp_path_factory, "default-store", fill)


def clone_version(store: DirectoryStore, source: str) -> str:
    """A copy of `source` under a new version id (and that id in its model.json): a second
    version to switch to, without training one."""
    from model.artifact import META_FILE, new_version_id

    version = new_version_id()
    dst = Path(shutil.copytree(store.path(source), store.path(version)))
    meta = json.loads((dst / META_FILE).read_text())
    meta["version"] = version
    (dst / META_FILE).write_text(json.dumps(meta))
    return version


def private_copy(template: Path, where: Path) -> Path:
    """A copy of a session's template store for one test, free to change."""
    shutil.copytree(template, where)
    return where


@pytest.fixture
def default_store(default_store_template: Path, tmp_path: Path) -> Path:
    """A private copy of the default store, free to change."""
    return private_copy(default_store_template, tmp_path / "store")


@pytest.fixture
def small_store(small_store_template: Path, tmp_path: Path) -> Path:
    """A private copy of the small store, free to change."""
    return private_copy(small_store_template, tmp_path / "store")


def ready_client(settings: Any) -> Iterator[Any]:
    """An in-process TestClient of the app, once its model has loaded."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`intently serve` as a real subprocess on a free port."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.log_path = log
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *args],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s: {self.output()}")

    def ask_every_worker(
        self,
        workers: int | set[str],
        until: Callable[[dict[str, Any]], bool] = lambda answer: True,
        texts: Sequence[str] = ("hello",),
        timeout: float = 120.0,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Classify on a fresh connection each time, so that any worker may take it, until each
        worker (named by X-Intently-Worker) has answered, its latest answer satisfying `until`.

        `workers`: how many there are, or their ids (process ids). Returns every (worker, answer)
        in order; a dropped connection (a worker killed meanwhile) is retried, not returned.
        """
        seen: list[tuple[str, dict[str, Any]]] = []
        latest: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        for text in itertools.cycle(texts):
            try:
                r = httpx.post(f"{self.url}/v1/classify", json={"text": text}, timeout=10)
            except httpx.TransportError:
                r = None
            if r is not None:
                assert r.status_code == 200, r.text
                seen.append((r.headers["x-intently-worker"], r.json()))
                latest[seen[-1][0]] = seen[-1][1]
            wanted = workers if isinstance(workers, set) else set(latest)
            count = len(workers) if isinstance(workers, set) else workers
            if len(wanted & latest.keys()) >= count and all(until(latest[w]) for w in wanted):
                return seen
            if time.monotonic() > deadline:
                versions = {w: a.get("model_version") for w, a in latest.items()}
                raise TimeoutError(f"after {timeout}s, wanted {workers}; latest answers: {versions}")
            time.sleep(0.02)
        raise AssertionError("unreachable")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        server = Server(list(args), env, log=tmp_path / f"server-{len(servers)}.log")
        servers.append(server)
        if ready:
            server.wait_ready()
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session: our own, or the one at $INTENTLY_TEST_DATABASE_URL."""
    server = PostgresServer.from_environment()
    if server is None:
        reason = "PostgreSQL server binaries (initdb) not found; install Debian's postgresql"
        missing_part(reason, part="postgresql")
    with server:
        yield server


@pytest.fixture
def restartable_postgres(postgres: PostgresServer) -> PostgresServer:
    """The session's server, for tests that stop and start it; skipped on an external server."""
    if not postgres.can_restart:
        pytest.skip("the server at $INTENTLY_TEST_DATABASE_URL is not ours to restart")
    return postgres


@pytest.fixture
def database_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database of this test's own, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex}"
    yield postgres.create_database(name)
    postgres.ensure_running()  # a test that stopped the server must not break the next ones
    postgres.drop_database(name)


# --- both store backends ---------------------------------------------------------------------

BACKENDS = ("directory", "postgres")


@pytest.fixture(params=BACKENDS)
def open_replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[str], ModelStore]]:
    """Opens the store of this test as one replica would, `name` being the replica: on the directory
    backend every replica shares one directory; on PostgreSQL each has a cache of its own."""
    url = request.getfixturevalue("database_url") if request.param == "postgres" else None
    opened: list[ModelStore] = []

    def replica(name: str = "a") -> ModelStore:
        store = open_store(tmp_path / (f"cache-{name}" if url else "store"), url)
        opened.append(store)
        return store

    yield replica
    for store in opened:
        store.close()
