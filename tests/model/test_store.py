"""The store's contract, on both backends: versions, the pointer, rollback, deletion, migration."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from app import cli as app_cli
from model.artifact import WEIGHTS_FILE, new_version_id
from store.model_store import ModelStore, StoreError, VersionNotFound, open_store
from store.postgres import PostgresStore
from training.readers import Example
from training.train import TrainResult

Replica = Callable[[str], ModelStore]


def _add(store: ModelStore, result: TrainResult, rows: list[Example], valid: list[Example] = ()) -> str:  # type: ignore[assignment]
    meta = replace(result.meta, version=new_version_id())
    return store.add(result.net, meta, rows, valid, {"report.json": b"{}"})


def _three_activated(store: ModelStore, result: TrainResult, rows: list[Example]) -> list[str]:
    """Three new versions, activated in turn: the last is active, the others its history."""
    versions = [_add(store, result, rows) for _ in range(3)]
    for version in versions:
        store.activate(version)
    return versions


def _active_and_other(store: ModelStore, result: TrainResult, rows: list[Example]) -> tuple[str, str]:
    """Two new versions, the first activated."""
    active, other = _add(store, result, rows), _add(store, result, rows)
    store.activate(active)
    return active, other


@pytest.fixture
def rows(assistant_intents: list[Example]) -> list[Example]:
    return assistant_intents[:40]


def test_an_empty_store_has_nothing_active(open_replica: Replica) -> None:
    store = open_replica("a")
    assert store.active() is None and store.list() == [] and store.list_ids() == []
    assert store.pointer().history == ()
    with pytest.raises(StoreError, match="no earlier version"):
        store.rollback()


def test_a_version_keeps_its_model_data_and_files(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    store = open_replica("a")
    version = _add(store, small_result, rows[:30], rows[30:])
    assert store.exists(version) and store.list_ids() == [version]
    assert store.meta(version).labels == small_result.meta.labels
    assert [r["text"] for r in store.read_data(version)] == [e.text for e in rows[:30]]
    assert [r["text"] for r in store.read_data(version, held_out=True)] == [e.text for e in rows[30:]]
    assert (store.path(version) / "report.json").read_bytes() == b"{}"
    [info] = store.list()
    assert info.version == version and not info.active and info.examples == small_result.meta.data["examples"]
    with pytest.raises(StoreError, match="already exists"):
        store.add(small_result.net, store.meta(version), rows)
    with pytest.raises(StoreError, match="not allowed"):
        store.add(
            small_result.net, replace(small_result.meta, version=new_version_id()), rows, (), {"../x": b""}
        )


def test_activation_history_and_rollback(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    store = open_replica("a")
    first, second, third = _three_activated(store, small_result, rows)
    assert store.active() == third and store.pointer().history == (second, first)
    store.activate(third)  # already active: nothing changes
    assert store.pointer().history == (second, first)
    assert store.rollback() == second
    assert store.pointer().version == second and store.pointer().history == (third, first)
    assert [v.version for v in store.list() if v.active] == [second]
    with pytest.raises(VersionNotFound):
        store.activate(new_version_id())
    with pytest.raises(StoreError, match="invalid version id"):
        store.activate("../../etc")
    assert store.active() == second


def test_rollback_skips_a_deleted_version(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    store = open_replica("a")
    first, second, third = _three_activated(store, small_result, rows)
    store.delete(second)
    assert store.rollback() == first and store.list_ids() == sorted([first, third])


def test_the_active_version_cannot_be_deleted(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    store = open_replica("a")
    active, other = _active_and_other(store, small_result, rows)
    with pytest.raises(StoreError, match="active"):
        store.delete(active)
    store.delete(other)
    assert not store.exists(other) and not (store.path(other) / "model.json").exists()
    with pytest.raises(VersionNotFound):
        store.delete(other)
    with pytest.raises(VersionNotFound):
        store.read_data(other)
    assert store.active() == active and store.list_ids() == [active]


def test_a_damaged_version_is_refused_and_the_pointer_stays(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    store = open_replica("a")
    good, bad = _active_and_other(store, small_result, rows)
    _damage(store, bad)
    with pytest.raises(StoreError, match=r"damaged|checksum"):
        store.activate(bad)
    assert store.active() == good


def _damage(store: ModelStore, version: str) -> None:
    """Break `version`'s weights where the backend keeps them."""
    if isinstance(store, PostgresStore):
        with store.db.connection() as conn:
            conn.execute(
                "UPDATE intently_files SET content = %s WHERE version = %s AND name = %s",
                (b"not a safetensors file", version, WEIGHTS_FILE),
            )
        # The intact cached copy stays: activation must still judge the database's copy.
    else:
        (store.path(version) / WEIGHTS_FILE).write_bytes(b"not a safetensors file")


def test_concurrent_activations_leave_one_consistent_pointer(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    replicas = [open_replica(name) for name in ("a", "b")]
    versions = [_add(replicas[0], small_result, rows) for _ in range(4)]
    errors: list[BaseException] = []

    def flip(store: ModelStore, order: list[str]) -> None:
        try:
            for _ in range(3):
                for version in order:
                    store.activate(version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=flip, args=(replicas[0], versions)),
        threading.Thread(target=flip, args=(replicas[1], versions[::-1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    pointer = replicas[1].pointer()
    assert pointer.version in versions and pointer.version not in pointer.history
    assert (
        sorted(pointer.history) == sorted(set(pointer.history)) == sorted(set(versions) - {pointer.version})
    )


def test_every_replica_sees_the_same_versions(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    a, b = open_replica("a"), open_replica("b")
    version = _add(a, small_result, rows)
    a.activate(version)
    assert b.active() == version and b.list_ids() == [version]
    assert (b.path(version) / WEIGHTS_FILE).read_bytes() == (a.path(version) / WEIGHTS_FILE).read_bytes()


def test_migrate_into_postgresql_and_back_keeps_every_version_and_the_pointer(
    database_url: str, small_result: TrainResult, rows: list[Example], tmp_path: Path, capsys
) -> None:
    source = open_store(tmp_path / "from")
    first, second = _add(source, small_result, rows[:30], rows[30:]), _add(source, small_result, rows)
    source.activate(first)
    source.activate(second)
    assert app_cli.main(["store", "migrate", str(source.root), database_url]) == 0
    assert "copied 2 version(s)" in capsys.readouterr().out
    assert app_cli.main(["store", "migrate", str(source.root), database_url]) == 0  # again: a no-op
    assert "copied 0 version(s)" in capsys.readouterr().out
    back = open_store(tmp_path / "back")
    assert app_cli.main(["store", "migrate", database_url, str(back.root)]) == 0
    assert back.list_ids() == source.list_ids() == sorted([first, second])
    assert back.pointer() == source.pointer() and back.active() == second
    for version in (first, second):
        for held_out in (False, True):
            assert back.read_data(version, held_out) == source.read_data(version, held_out)
        assert (back.path(version) / WEIGHTS_FILE).read_bytes() == (
            source.path(version) / WEIGHTS_FILE
        ).read_bytes()
    assert app_cli.main(["store", "migrate", str(tmp_path / "from" / "versions"), str(back.root)]) == 2
    assert "neither a model store directory" in capsys.readouterr().err


def test_the_models_commands_work_on_postgresql(
    database_url: str, small_result: TrainResult, rows: list[Example], tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("INTENTLY_DATABASE_URL", database_url)
    cache = str(tmp_path / "cache")
    store = open_store(cache, database_url)
    first, second = _add(store, small_result, rows), _add(store, small_result, rows)
    for argv, said in (
        (["models", "activate", first], f"activated {first}"),
        (["models", "activate", second], f"activated {second}"),
        (["models", "rollback"], f"rolled back to {first}"),
        (["models", "delete", second], f"deleted {second}"),
    ):
        assert app_cli.main([*argv, "--store", cache]) == 0, capsys.readouterr().err
        assert said in capsys.readouterr().out
    assert app_cli.main(["models", "list", "--json", "--store", str(tmp_path / "elsewhere")]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["active"] == first and [v["version"] for v in listed["versions"]] == [first]
    assert app_cli.main(["models", "delete", first, "--store", cache]) == 2
    assert "active and cannot be deleted" in capsys.readouterr().err
    store.close()


# --- what only PostgreSQL has ------------------------------------------------------------


@pytest.fixture
def two_pg_replicas(database_url: str, tmp_path: Path) -> tuple[PostgresStore, PostgresStore]:
    stores = (PostgresStore(database_url, tmp_path / "a"), PostgresStore(database_url, tmp_path / "b"))
    yield stores  # type: ignore[misc]
    for store in stores:
        store.close()


def test_a_replica_hears_of_an_activation_at_once(
    two_pg_replicas: tuple[PostgresStore, PostgresStore], small_result: TrainResult, rows: list[Example]
) -> None:
    a, b = two_pg_replicas
    version = _add(a, small_result, rows)
    b.wait_for_change(0.01)  # opens its LISTEN connection
    threading.Timer(0.3, a.activate, args=(version,)).start()
    start = time.monotonic()
    b.wait_for_change(10.0)
    waited = time.monotonic() - start
    assert b.active() == version
    assert waited < 5.0, f"the notification took {waited:.2f} s; polling alone would take 10"


def test_a_new_version_is_fetched_ahead_of_its_activation(
    two_pg_replicas: tuple[PostgresStore, PostgresStore], small_result: TrainResult, rows: list[Example]
) -> None:
    a, b = two_pg_replicas
    b.wait_for_change(0.01)  # opens its LISTEN connection
    version = _add(a, small_result, rows)
    b.wait_for_change(10.0)  # the announcement of the new version
    cached = b.root / "versions" / version / WEIGHTS_FILE
    assert cached.read_bytes() == (a.path(version) / WEIGHTS_FILE).read_bytes()


def test_a_damaged_cache_is_fetched_again(
    two_pg_replicas: tuple[PostgresStore, PostgresStore], small_result: TrainResult, rows: list[Example]
) -> None:
    a, b = two_pg_replicas
    version = _add(a, small_result, rows)
    weights = b.path(version) / WEIGHTS_FILE
    good = weights.read_bytes()
    weights.write_bytes(b"damaged on this replica's disk")
    fresh = PostgresStore(b.db.url, b.root)  # a restarted replica: it trusts no cache unchecked
    try:
        assert (fresh.path(version) / WEIGHTS_FILE).read_bytes() == good
    finally:
        fresh.close()


def test_the_first_start_lock_lets_one_replica_in(
    two_pg_replicas: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_pg_replicas
    order: list[str] = []

    def second() -> None:
        with b.first_start():
            order.append("b")

    with a.first_start():
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("a")
    thread.join(10)
    assert order == ["a", "b"]


def test_a_newer_schema_is_refused(database_url: str, tmp_path: Path) -> None:
    store = PostgresStore(database_url, tmp_path / "cache")
    try:
        store.list_ids()
        with store.db.connection() as conn:
            conn.execute("INSERT INTO intently_schema (version) VALUES (999)")
        newer = PostgresStore(database_url, tmp_path / "cache")
        with pytest.raises(StoreError, match="schema version 999"):
            newer.list_ids()
        newer.close()
    finally:
        store.close()


def test_remove_partial_deletes_only_abandoned_temporaries(
    open_replica: Replica, small_result: TrainResult, rows: list[Example]
) -> None:
    """What a killed writer leaves (dot-named staging and temporary directories) goes once older
    than the grace period; a write still in progress (a fresh temporary) and every version stay."""
    store = open_replica("a")
    version = _add(store, small_result, rows)
    versions = store.root / "versions"
    old_staging, old_tmp, fresh = (
        versions / ".staging-abc123",
        versions / f".{version}.tmp-x1",
        versions / ".staging-new",
    )
    for folder in (old_staging, old_tmp, fresh):
        folder.mkdir()
        (folder / WEIGHTS_FILE).write_bytes(b"half a model")
    hour_ago = time.time() - 3600
    for path in (old_staging / WEIGHTS_FILE, old_staging, old_tmp / WEIGHTS_FILE, old_tmp):
        os.utime(path, (hour_ago, hour_ago))
    assert sorted(store.remove_partial(older_than=600)) == sorted([old_staging.name, old_tmp.name])
    assert sorted(p.name for p in versions.iterdir()) == sorted([version, fresh.name])
    assert store.list_ids() == [version] and store.exists(version)
    assert store.remove_partial(older_than=600) == []  # nothing more to do
    assert store.remove_partial(older_than=0) == [fresh.name]
    assert [p.name for p in versions.iterdir()] == [version]


def test_remove_partial_on_a_store_never_written(tmp_path: Path) -> None:
    assert open_store(tmp_path / "nothing-here").remove_partial(older_than=0) == []
