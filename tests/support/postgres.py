"""A real PostgreSQL server for the tests: started from the installed binaries, on a free port.

Running the PostgreSQL tests locally takes one of:

- PostgreSQL's server binaries, `initdb` and `postgres` (13 or newer). They are looked for on
  PATH, then in the newest /usr/lib/postgresql/*/bin (where Debian's package puts them):

      sudo apt-get install postgresql
      PYTHONPATH=. .venv/bin/python -m pytest -q tests/support/test_postgres_server.py

  Each session then runs its own throwaway server: a fresh cluster in a temporary directory
  (`initdb --auth=trust -U postgres`), TCP on 127.0.0.1 only, with durability switched off
  for speed. Its log is `server.log` in the data directory (`PostgresServer.log_path`); the
  directory is removed when the session ends. Run as root, the server runs as `nobody`,
  since PostgreSQL refuses to run as root.
  Debian's package also creates and may start its own cluster on port 5432; the tests
  never use it.

- Or a server of your own: `INTENTLY_TEST_DATABASE_URL=postgresql://user:password@host:port/db`,
  a role that may create databases. Each test gets a database of its own there
  (`t_<hex>`, dropped afterwards); tests that restart the server are skipped.

With neither, the PostgreSQL tests are skipped on a developer's machine and fail in CI
(tests/ci.py); `.ci/run` installs Debian's package.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

EXTERNAL_URL_ENV = "INTENTLY_TEST_DATABASE_URL"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
# PostgreSQL refuses to run as root; root's tests run the server as this user.
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
# A throwaway cluster needs no durability: these make initdb, CREATE DATABASE and commits fast.
SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


@dataclass(frozen=True)
class Binaries:
    initdb: Path
    postgres: Path


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin, or 9.6/bin on old systems: compare the numbers, not the text.
    parts = bindir.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def find_binaries() -> Binaries | None:
    """`initdb` and `postgres` from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        # A PATH entry is often a symlink into the real bin directory, where postgres sits too.
        beside = Path(initdb).resolve().parent / "postgres"
        postgres = str(beside) if beside.is_file() else shutil.which("postgres")
        if postgres is not None:
            return Binaries(Path(initdb), Path(postgres))
    for bindir in sorted(DEBIAN_ROOT.glob("*/bin"), key=_version_key, reverse=True):
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return Binaries(bindir / "initdb", bindir / "postgres")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _unprivileged() -> pwd.struct_passwd | None:
    """Whom to run the server as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, and there is no user {UNPRIVILEGED_USER!r} to run PostgreSQL as"
        ) from None


def _check_reachable(path: Path, user: pwd.struct_passwd) -> None:
    # The server chdirs into its data directory: every directory above it must let others through.
    for parent in path.parents:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != user.pw_uid and not mode & stat.S_IXOTH:
            raise RuntimeError(
                f"{parent} is not searchable by {user.pw_name}, who runs PostgreSQL; "
                "point TMPDIR at a directory every user may enter"
            )


class PostgresServer:
    """A PostgreSQL server the tests own (`PostgresServer(binaries)`), or one they are pointed at
    (`PostgresServer(external_url=url)`): databases are created and dropped on either; only an
    owned server can be stopped and started again (`can_restart`).

    Use as a context manager: entering starts an owned server (or checks that an external one
    answers), leaving stops it and removes its directory.
    """

    def __init__(self, binaries: Binaries | None = None, *, external_url: str | None = None) -> None:
        """Ours, run from `binaries`; or, given `external_url`, the server someone else runs there."""
        if (binaries is None) == (external_url is None):
            raise ValueError("give the binaries of a server to run, or the URL of an external one")
        self.binaries = binaries
        self._external = external_url
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if external_url is None:
            self.host, self.port = HOST, _free_port()
            self._user = _unprivileged()
            return
        parts = urlsplit(external_url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise ValueError(f"{EXTERNAL_URL_ENV} must be a postgresql://user@host:port/dbname URL")
        self.host, self.port = parts.hostname, parts.port or 5432
        self._user = None

    @classmethod
    def from_environment(cls) -> PostgresServer | None:
        """The server at $INTENTLY_TEST_DATABASE_URL, else one of our own; None when neither can be."""
        url = os.environ.get(EXTERNAL_URL_ENV)
        if url:
            return cls(external_url=url)
        binaries = find_binaries()
        return cls(binaries) if binaries else None

    @property
    def can_restart(self) -> bool:
        return self._external is None

    @property
    def running(self) -> bool:
        """Whether an owned server's process is up; an external server counts as always running."""
        return self._external is not None or (self._proc is not None and self._proc.poll() is None)

    def url(self, dbname: str = SUPERUSER) -> str:
        """The URL of database `dbname` on this server."""
        if self._external is not None:
            return urlunsplit(urlsplit(self._external)._replace(path=f"/{dbname}"))
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def _admin_url(self) -> str:
        # Where CREATE/DROP DATABASE run from: the external URL's own database, or ours.
        if self._external is not None:
            return self._external if urlsplit(self._external).path.strip("/") else self.url(SUPERUSER)
        return self.url(SUPERUSER)

    def create_database(self, name: str) -> str:
        """Create an empty database `name`; returns its URL."""
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, ending any session still connected to it (PostgreSQL 13+)."""
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _restartable(self) -> Binaries:
        if self.binaries is None:
            raise RuntimeError(f"the server at {EXTERNAL_URL_ENV} is not ours to stop or start")
        return self.binaries

    def _run_as(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        # A developer's PGPORT, PGDATA or PGHOST must not steer the server we start.
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _init(self, binaries: Binaries) -> Path:
        # Not pytest's tmp_path: that sits in a 0700 directory of root's, where nobody cannot enter.
        data = Path(tempfile.mkdtemp(prefix="intently-pg-"))
        self.data_dir = data
        atexit.register(self.cleanup)
        if self._user is not None:
            _check_reachable(data, self._user)
            os.chown(data, self._user.pw_uid, self._user.pw_gid)
        args = [str(binaries.initdb), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
        args += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        result = subprocess.run(
            args, cwd=data, env=self._env(), capture_output=True, text=True, timeout=120, **self._run_as()
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        # The port is fixed here, so that start() after stop() comes back where clients look.
        lines = [f"port = {self.port}", *(f"{k} = '{v}'" for k, v in SETTINGS.items())]
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# tests/support/postgres.py\n" + "\n".join(lines) + "\n")
        return data

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (creating its cluster the first time) and wait until it accepts connections.

        After stop(), it comes back on the same port with the same data.
        """
        binaries = self._restartable()
        if self.running:
            raise RuntimeError(f"PostgreSQL is already running on port {self.port}")
        data = self.data_dir or self._init(binaries)
        self.log_path = data / "server.log"
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(binaries.postgres), "-D", str(data)],
                cwd=data,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for pytest must leave teardown to stop it.
                start_new_session=True,
                **self._run_as(),
            )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self._kill()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections; raises with its log's tail when it does not."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"PostgreSQL exited with status {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self._admin_url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    where = f"{self.host}:{self.port}" + (f" (${EXTERNAL_URL_ENV})" if self._external else "")
                    log = "" if self._external else f"\n{self.log_tail()}"
                    raise TimeoutError(
                        f"PostgreSQL at {where} did not accept connections within {timeout}s: {e}{log}"
                    ) from e
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: sessions are ended, the data is checkpointed, the port is freed."""
        self._restartable()
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill()
            raise RuntimeError(f"PostgreSQL did not stop within {timeout}s:\n{self.log_tail()}") from None

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stopped for the duration of the block, started again after it even when the block fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def ensure_running(self) -> None:
        """Start an owned server that a test left stopped; nothing otherwise."""
        if not self.running:
            self.start()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGQUIT: immediate shutdown, which also ends the server's child processes.
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no server log)"
        return self.log_path.read_text(errors="replace")[-chars:]

    def cleanup(self) -> None:
        """Stop an owned server and remove its directory; an external server is left alone."""
        if self._external is not None:
            return
        try:
            self.stop()
        finally:
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir = None
                atexit.unregister(self.cleanup)

    def __enter__(self) -> PostgresServer:
        try:
            if self._external is None:
                self.start()
            else:
                self.wait_ready(timeout=5)  # someone else's server: up already, or not at all
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
