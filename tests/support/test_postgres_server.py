"""The PostgreSQL fixtures themselves: a real server, a database per test, a restart that keeps data."""

from __future__ import annotations

import os
import pwd
import uuid

import psutil
import psycopg
import pytest

from tests.support.postgres import UNPRIVILEGED_USER, PostgresServer


def test_database_url_is_a_working_empty_database(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE intents (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO intents (name) VALUES (%s), (%s)", ("greet", "ünïcode"))
        conn.commit()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT name FROM intents ORDER BY id").fetchall()
        encoding = conn.execute("SHOW server_encoding").fetchone()
    assert rows == [("greet",), ("ünïcode",)]
    assert encoding == ("UTF8",)


def test_databases_are_distinct(postgres: PostgresServer, database_url: str) -> None:
    name = f"t_{uuid.uuid4().hex}"
    other = postgres.create_database(name)
    try:
        assert other != database_url
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
            first = conn.execute("SELECT current_database()").fetchone()
        with psycopg.connect(other, autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
        assert first is not None and first[0] != name
    finally:
        postgres.drop_database(name)


def test_drop_database_ends_open_sessions(postgres: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex}"
    url = postgres.create_database(name)
    held = psycopg.connect(url)
    try:
        postgres.drop_database(name)  # WITH (FORCE): the open session does not block it
        with psycopg.connect(postgres.url()) as conn:
            left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()
        assert left == (0,)
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    finally:
        held.close()


def test_restart_keeps_data_and_port(restartable_postgres: PostgresServer, database_url: str) -> None:
    server = restartable_postgres
    port = server.port
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('before the restart')")
    open_before = psycopg.connect(database_url, autocommit=True)
    try:
        with server.stopped():
            assert not server.running
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(database_url, connect_timeout=2)
        assert server.running and server.port == port
        # A connection from before the restart is dead, as a service's pooled ones would be.
        with pytest.raises(psycopg.OperationalError):
            open_before.execute("SELECT 1")
    finally:
        open_before.close()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT value FROM kept").fetchall() == [("before the restart",)]
        assert conn.execute("SHOW port").fetchone() == (str(port),)


def test_own_server_settings(restartable_postgres: PostgresServer) -> None:
    with psycopg.connect(restartable_postgres.url()) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (["unix_socket_directories", "listen_addresses", "fsync", "synchronous_commit"],),
            ).fetchall()
        )
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        # Read while the connection holds its backend open: it exits when the connection closes.
        backend_uid = psutil.Process(backend[0]).uids().effective
    assert settings == {
        "unix_socket_directories": "",
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "off",
    }
    # PostgreSQL will not run as root: root's tests run it as an unprivileged user.
    expected = pwd.getpwnam(UNPRIVILEGED_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert backend_uid == expected
