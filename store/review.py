"""The review inbox's items: live requests kept for a person to label; in the store's own backend.

With a directory store the items are SQLite inside it (`review.sqlite3`, WAL); with PostgreSQL
they are the table `intently_review` beside the versions (store/database.py, migration 2). Either
way every worker of every replica writes to one inbox: an item's id is a hash of its text, so the
same text sent through two workers is one row whose `count` both add to (one upsert each).

Both backends run the same SQL (written with `%s` placeholders; SQLite's `?` are put in), so the
rules of dedup, retention and labelling are written once, here.
"""

from __future__ import annotations

import builtins  # the class's own `list` method shadows the builtin in the annotations after it
import hashlib
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from math import sqrt
from typing import TYPE_CHECKING, Any, Literal, get_args

from store.directory import DirectoryStore
from store.model_store import ModelStore, StoreUnavailable

if TYPE_CHECKING:  # psycopg (several MB a process) is imported only where PostgreSQL is used
    from store.postgres import PostgresStore

DB_FILE = "review.sqlite3"
Reason = Literal["out_of_scope", "low_confidence", "ambiguous", "sample"]
REASONS: tuple[str, ...] = get_args(Reason)
Status = Literal["unlabelled", "labelled", "used", "discarded", "any"]
STATUSES: tuple[str, ...] = get_args(Status)
OOS = "oos"

_SQLITE_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS intently_review (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        text TEXT NOT NULL,
        intent TEXT NOT NULL,
        confidence REAL NOT NULL,
        out_of_scope INTEGER NOT NULL,
        reason TEXT NOT NULL,
        model_version TEXT NOT NULL,
        ranking TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        label TEXT,
        discarded INTEGER NOT NULL DEFAULT 0,
        used_in TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS intently_review_last_seen ON intently_review (last_seen)",
)
# PostgreSQL's table: store/database.py's migration 2 (the same columns; `seq` a bigserial).

_COLUMNS = (
    "id, text, intent, confidence, out_of_scope, reason, model_version, ranking, count, first_seen,"
    " last_seen, label, discarded, used_in, seq"
)
# One statement per distinct text: a text seen again adds its count, moves last_seen, and takes the
# latest answer (the model serving now); once sampled it stays `sample` (the unbiased estimate of
# live accuracy counts on it). Labels, discards and first_seen are never touched by a sighting.
_UPSERT = """
INSERT INTO intently_review
    (id, text, intent, confidence, out_of_scope, reason, model_version, ranking, count, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    count = intently_review.count + excluded.count,
    last_seen = CASE WHEN excluded.last_seen > intently_review.last_seen
        THEN excluded.last_seen ELSE intently_review.last_seen END,
    intent = excluded.intent,
    confidence = excluded.confidence,
    out_of_scope = excluded.out_of_scope,
    model_version = excluded.model_version,
    ranking = excluded.ranking,
    reason = CASE WHEN intently_review.reason = 'sample' THEN 'sample' ELSE excluded.reason END
"""
_STATUS_WHERE = {
    None: "discarded = 0",
    "unlabelled": "discarded = 0 AND label IS NULL",
    "labelled": "discarded = 0 AND label IS NOT NULL AND used_in IS NULL",
    "used": "discarded = 0 AND used_in IS NOT NULL",
    "discarded": "discarded = 1",
    "any": "1 = 1",
}


def text_key(text: str) -> str:
    """What makes two texts one item: the same words, whatever the case and spacing."""
    return " ".join(text.split()).casefold()


def item_id(text: str) -> str:
    return hashlib.sha256(text_key(text).encode("utf-8")).hexdigest()[:16]


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass
class Sighting:
    """One or more requests of the same text, as the capture hands them to the store."""

    text: str
    intent: str  # the top-ranked intent, also when out of scope
    confidence: float
    out_of_scope: bool
    reason: str
    model_version: str
    ranking: builtins.list[tuple[str, float]]  # the top three
    seen: float  # time.time() of the latest
    count: int = 1

    @property
    def id(self) -> str:
        return item_id(self.text)


def _public(row: Sequence[Any]) -> dict[str, Any]:
    (id_, text, intent, confidence, oos, reason, version, ranking, count, first, last, label, discarded,
     used_in, _seq) = row  # fmt: skip
    return {
        "id": id_,
        "text": text,
        "intent": intent,
        "confidence": float(confidence),
        "out_of_scope": bool(oos),
        "reason": reason,
        "model_version": version,
        "count": int(count),
        "first_seen": iso(first),
        "last_seen": iso(last),
        "label": label,
        "ranking": [{"intent": i, "confidence": c} for i, c in json.loads(ranking)],
        "discarded": bool(discarded),
        "used_in": used_in,
    }


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); (0, 1) with no trials."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class ReviewStore(ABC):
    """The inbox of one model store."""

    placeholder = "%s"

    @abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A connection in one transaction: `execute(sql, params)` returns a cursor."""

    def _sql(self, query: str) -> str:
        return query if self.placeholder == "%s" else query.replace("%s", self.placeholder)

    def _run(self, conn: Any, query: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(query), tuple(params))

    def close(self) -> None:  # noqa: B027 - PostgreSQL's pool belongs to the model store
        """Release what this thread holds."""

    # --- what the capture writes -------------------------------------------

    def record(self, sightings: Sequence[Sighting]) -> None:
        """Add sightings (one per distinct text), in id order: two writers lock rows in one order."""
        rows = [
            (
                s.id,
                s.text,
                s.intent,
                s.confidence,
                int(s.out_of_scope),
                s.reason,
                s.model_version,
                json.dumps(s.ranking, ensure_ascii=False),
                s.count,
                s.seen,
                s.seen,
            )
            for s in sorted(sightings, key=lambda s: s.id)
        ]
        if not rows:
            return
        with self._transaction() as conn:
            self._many(conn, _UPSERT, rows)

    def _many(self, conn: Any, query: str, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self._run(conn, query, row)

    def prune(self, max_items: int, max_age_seconds: float, now: float) -> int:
        """Drop items not seen for `max_age_seconds`, then the oldest beyond `max_items` (unlabelled
        ones before labelled ones); returns how many went."""
        with self._transaction() as conn:
            gone = self._run(
                conn, "DELETE FROM intently_review WHERE last_seen < %s", (now - max_age_seconds,)
            )
            removed: int = max(gone.rowcount, 0)
            total = int(self._run(conn, "SELECT count(*) FROM intently_review").fetchone()[0])
            if total > max_items:
                gone = self._run(
                    conn,
                    "DELETE FROM intently_review WHERE seq IN (SELECT seq FROM intently_review"
                    " ORDER BY CASE WHEN label IS NULL THEN 0 ELSE 1 END, last_seen, seq LIMIT %s)",
                    (total - max_items,),
                )
                removed += max(gone.rowcount, 0)
        return removed

    # --- what the admin reads and changes ------------------------------------

    def list(
        self,
        reason: str | None = None,
        intent: str | None = None,
        version: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: int | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], str | None]:
        """Items newest first, and the cursor of the next page (None on the last)."""
        where: builtins.list[str] = [_STATUS_WHERE[status]]
        params: builtins.list[Any] = []
        for column, value in (("reason", reason), ("intent", intent), ("model_version", version)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if cursor is not None:
            where.append("seq < %s")
            params.append(cursor)
        query = (
            f"SELECT {_COLUMNS} FROM intently_review WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT %s"
        )
        with self._transaction() as conn:
            rows = self._run(conn, query, (*params, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_public(r) for r in rows], (str(rows[-1][-1]) if more and rows else None)

    def get(self, item_id: str) -> dict[str, Any]:
        with self._transaction() as conn:
            row = self._run(
                conn, f"SELECT {_COLUMNS} FROM intently_review WHERE id = %s", (item_id,)
            ).fetchone()
        if row is None:
            raise KeyError(item_id)
        return _public(row)

    def set_labels(self, changes: Sequence[tuple[str, str | None, bool]]) -> dict[str, str]:
        """Apply (id, label, discard) to each item in one transaction; returns the reason each item
        found was kept for, by id (an id missing from it has no item).

        A label (an intent or `oos`) undoes a discard; a discard clears the label; (id, None, False)
        takes the item back to unlabelled. An item used in training can be labelled again.
        """
        found: dict[str, str] = {}
        with self._transaction() as conn:
            for item, label, discard in changes:
                row = self._run(conn, "SELECT reason FROM intently_review WHERE id = %s", (item,)).fetchone()
                if row is None:
                    continue
                self._run(
                    conn,
                    "UPDATE intently_review SET label = %s, discarded = %s, used_in = NULL WHERE id = %s",
                    (None if discard else label, int(discard), item),
                )
                found[item] = row[0]
        return found

    def delete(self, item_id: str) -> bool:
        with self._transaction() as conn:
            gone: int = self._run(conn, "DELETE FROM intently_review WHERE id = %s", (item_id,)).rowcount
        return gone > 0

    def clear(self) -> int:
        with self._transaction() as conn:
            gone: int = self._run(conn, "DELETE FROM intently_review").rowcount
        return max(gone, 0)

    def labelled(self, unused_only: bool = False) -> builtins.list[dict[str, Any]]:
        """Labelled items (never discarded ones), oldest first: what export and training read."""
        where = _STATUS_WHERE["labelled"] if unused_only else "discarded = 0 AND label IS NOT NULL"
        with self._transaction() as conn:
            rows = self._run(
                conn, f"SELECT {_COLUMNS} FROM intently_review WHERE {where} ORDER BY seq"
            ).fetchall()
        return [_public(r) for r in rows]

    def unlabelled_texts(self, limit: int) -> builtins.list[str]:
        """The texts of at most `limit` unlabelled items, the most often seen first: a transfer set."""
        where = _STATUS_WHERE["unlabelled"]
        query = f"SELECT text FROM intently_review WHERE {where} ORDER BY count DESC, seq DESC LIMIT %s"
        with self._transaction() as conn:
            return [str(r[0]) for r in self._run(conn, query, (limit,)).fetchall()]

    def mark_used(self, ids: Sequence[str], version: str) -> int:
        """These items went into `version`: out of the next job's data (unless labelled again)."""
        done = 0
        with self._transaction() as conn:
            for item in ids:
                cur = self._run(
                    conn,
                    "UPDATE intently_review SET used_in = %s WHERE id = %s AND label IS NOT NULL"
                    " AND discarded = 0",
                    (version, item),
                )
                done += max(cur.rowcount, 0)
        return done

    def stats(self) -> dict[str, Any]:
        """How many items of each status and reason, and live accuracy estimated from the random
        sample's labelled items (the other reasons are chosen by the model's doubt: biased)."""
        with self._transaction() as conn:
            statuses = {
                name: int(
                    self._run(conn, f"SELECT count(*) FROM intently_review WHERE {where}").fetchone()[0]
                )
                for name, where in _STATUS_WHERE.items()
                if name is not None
            }
            reasons = dict(
                self._run(
                    conn, "SELECT reason, count(*) FROM intently_review WHERE discarded = 0 GROUP BY reason"
                ).fetchall()
            )
            n, right = self._run(
                conn,
                "SELECT count(*), coalesce(sum(CASE WHEN (out_of_scope = 1 AND label = %s)"
                " OR (out_of_scope = 0 AND label = intent) THEN 1 ELSE 0 END), 0) FROM intently_review"
                " WHERE reason = 'sample' AND label IS NOT NULL AND discarded = 0",
                (OOS,),
            ).fetchone()
            known, turned_away, unknown, caught = self._run(
                conn,
                "SELECT coalesce(sum(CASE WHEN label <> %s THEN 1 ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN label <> %s AND out_of_scope = 1 THEN 1 ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN label = %s THEN 1 ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN label = %s AND out_of_scope = 1 THEN 1 ELSE 0 END), 0)"
                " FROM intently_review WHERE reason = 'sample' AND label IS NOT NULL AND discarded = 0",
                (OOS, OOS, OOS, OOS),
            ).fetchone()
        n, right = int(n), int(right)
        known, unknown = int(known), int(unknown)
        low, high = wilson(right, n)
        return {
            "total": statuses["any"],
            "statuses": {k: v for k, v in statuses.items() if k != "any"},
            "reasons": {r: int(reasons.get(r, 0)) for r in REASONS},
            "accuracy": {
                "labelled_sample": n,
                "correct": right,
                "estimate": right / n if n else None,
                "low": low,
                "high": high,
                "confidence_level": 0.95,
            },
            # The live counterpart of the evaluation's operating curve, at the served setting.
            "operating_point": {
                "known": known,
                "known_turned_away": int(turned_away) / known if known else None,
                "unknown": unknown,
                "unknown_caught": int(caught) / unknown if unknown else None,
            },
        }


class SqliteReviewStore(ReviewStore):
    """SQLite in WAL mode inside the store directory: one machine's workers share it.

    Each thread keeps its connection open: opening one, and above all closing the last one (which
    checkpoints the WAL and syncs the file), would cost the capture's writer ten milliseconds a batch.
    """

    placeholder = "?"

    def __init__(self, store: DirectoryStore, timeout: float = 5.0):
        self.store = store
        self.path = store.root / DB_FILE
        self.timeout = timeout
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.store.ensure()
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"the review inbox {self.path} cannot be opened ({exc}); retry") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            # No fsync per commit (WAL's NORMAL): a power cut may lose the last items, never corrupt
            # the file; the writer commits four times a second and needs no more.
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"the review inbox {self.path} cannot be used ({exc}); retry") from None
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next call opens another)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.close()  # a file deleted or replaced meanwhile: open it afresh next time
            raise StoreUnavailable(f"the review inbox {self.path} cannot be used ({exc}); retry") from None

    def _many(self, conn: Any, query: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(self._sql(query), rows)


class PostgresReviewStore(ReviewStore):
    """The table `intently_review` beside the versions: every replica feeds one inbox."""

    def __init__(self, store: PostgresStore):
        self.db = store.db

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self.db.connection() as conn:
            yield conn

    def _many(self, conn: Any, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cur:
            cur.executemany(query, rows)


def open_review_store(store: ModelStore) -> ReviewStore:
    """The review inbox kept with `store`."""
    if isinstance(store, DirectoryStore):
        return SqliteReviewStore(store)
    from store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return PostgresReviewStore(store)
    raise TypeError(f"no review inbox for {type(store).__name__}")
