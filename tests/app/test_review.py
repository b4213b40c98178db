"""The review inbox in-process: capture rules on a real small model, dedup, bounds, privacy, the
admin API and its export read back by training's own readers."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.config import Settings
from app.metrics import FAST_PATH, REVIEW_DROPPED, REVIEW_KEPT
from app.review import CaptureRule, ReviewCapture
from model.predictor import Predictor
from store.directory import DirectoryStore
from store.model_store import ModelStore
from store.review import DB_FILE, REASONS, Sighting, SqliteReviewStore, item_id, open_review_store, wilson
from tests.conftest import ready_client
from training.readers import Example, parse_bytes

TOKEN = "review-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NONSENSE = "colorless green ideas sleep furiously"
FIELDS = {
    "id", "text", "intent", "confidence", "out_of_scope", "reason", "model_version", "count", "first_seen",
    "last_seen", "label",
}  # fmt: skip


def _settings(store: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "model_store": store,
        "admin_token": SecretStr(TOKEN),
        "review": True,
        "review_sample_rate": 0.0,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def inbox(small_store: Path) -> Iterator[TestClient]:
    yield from ready_client(_settings(small_store))


def _flush(client: TestClient) -> None:
    client.app.state.review.flush()  # type: ignore[attr-defined]


def _counter(metric: object, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())  # type: ignore[attr-defined]


# --- the rules, on a real model --------------------------------------------------------------


def test_capture_rules_follow_the_models_threshold(
    small_predictor: Predictor, assistant_test: list[Example]
) -> None:
    t = small_predictor.meta.threshold
    rule = CaptureRule.for_threshold(t)
    assert rule.low == pytest.approx(t + (1 - t) / 2) and rule.margin == pytest.approx((1 - t) / 4)
    predictions = small_predictor.predict_batch([e.text for e in assistant_test] + [NONSENSE], top_k=3)
    reasons = [rule.reason(p) for p in predictions]
    for p, reason in zip(predictions, reasons, strict=True):
        gap = p.ranking[0].confidence - p.ranking[1].confidence
        if p.out_of_scope:
            assert reason == "out_of_scope"
        elif gap < rule.margin:
            assert reason == "ambiguous"
        elif p.confidence < rule.low:
            assert reason == "low_confidence"
        else:
            assert reason is None and p.confidence >= rule.low and gap >= rule.margin
    assert reasons[-1] == "out_of_scope"
    kept = sum(r is not None for r in reasons)
    # The model's doubt, not everything: most confident in-scope answers are not kept.
    assert 0 < kept < len(reasons)
    in_scope = [r for p, r in zip(predictions, reasons, strict=True) if not p.out_of_scope]
    assert sum(r is None for r in in_scope) > len(in_scope) / 2


def test_a_sample_rate_of_one_keeps_every_request_as_sample(
    small_predictor: Predictor, tmp_path: Path
) -> None:
    store = SqliteReviewStore(DirectoryStore(tmp_path / "store"))
    capture = ReviewCapture(store, sample_rate=1.0)
    capture.offer(small_predictor.predict_batch(["What time is it?", NONSENSE, "play some jazz"]), 0.3)
    capture.flush()
    items, _ = store.list()
    assert {i["reason"] for i in items} == {"sample"} and len(items) == 3


def test_a_full_queue_drops_and_counts_never_blocks(small_predictor: Predictor, tmp_path: Path) -> None:
    store = SqliteReviewStore(DirectoryStore(tmp_path / "store"))
    capture = ReviewCapture(store, sample_rate=1.0, max_queue=2)  # no writer thread: the queue fills
    before = _counter(REVIEW_DROPPED, "sample", "queue_full")
    capture.offer(small_predictor.predict_batch([f"{NONSENSE} {i}" for i in range(5)]), 0.3)
    assert _counter(REVIEW_DROPPED, "sample", "queue_full") - before == 3
    capture.flush()
    assert len(store.list()[0]) == 2


# --- the store: dedup, bounds, retention -----------------------------------------------------


def _sighting(text: str, seen: float, reason: str = "out_of_scope", count: int = 1) -> Sighting:
    return Sighting(
        text, "ask_time", 0.4, reason == "out_of_scope", reason, "v1", [("ask_time", 0.4)], seen, count
    )


def test_identical_texts_are_one_item_counted(open_replica: Callable[[str], ModelStore]) -> None:
    store = open_review_store(open_replica("a"))
    store.record([_sighting("Book a  table", 100.0, count=2)])
    store.record([_sighting("book a table", 200.0, "low_confidence")])
    store.record([_sighting("BOOK A TABLE", 150.0, "sample")])
    store.record([_sighting("book a table", 300.0, "ambiguous")])
    (item,) = store.list()[0]
    assert item["id"] == item_id("book a table") and item["text"] == "Book a  table"
    assert item["count"] == 5 and item["reason"] == "sample"  # once sampled, stays in the sample
    assert item["first_seen"].startswith("1970-01-01T00:01:40") and item["last_seen"].startswith(
        "1970-01-01T00:05"
    )


def test_bounds_drop_the_oldest_unlabelled_first_and_age_drops_everything(
    open_replica: Callable[[str], ModelStore],
) -> None:
    """On both backends (directory: SQLite; PostgreSQL: the table of migration 3)."""
    store = open_review_store(open_replica("a"))
    now = 1_000_000.0
    store.record([_sighting(f"text {i}", now - 100 + i) for i in range(10)])
    store.set_labels([(item_id("text 0"), "ask_time", False)])  # the oldest, but labelled
    assert store.prune(max_items=6, max_age_seconds=1e9, now=now) == 4
    left = {i["text"] for i in store.list(status="any")[0]}
    assert left == {"text 0", "text 6", "text 7", "text 8", "text 9"} | {"text 5"}
    # Age: nothing not seen for max_age_seconds stays, labelled or not.
    assert store.prune(max_items=100, max_age_seconds=94.5, now=now) == 2  # text 0 and 5: seen at -100, -95
    assert {i["text"] for i in store.list(status="any")[0]} == {"text 6", "text 7", "text 8", "text 9"}
    # The rest of the store's API, on this backend too.
    items, following = store.list(limit=3)
    assert len(items) == 3 and following is not None
    rest, last = store.list(limit=3, cursor=int(following))
    assert {i["text"] for i in items + rest} == {"text 6", "text 7", "text 8", "text 9"} and last is None
    assert store.set_labels([(item_id("text 6"), "oos", False), ("nope", "oos", False)]) == {
        item_id("text 6"): "out_of_scope"
    }
    assert store.mark_used([item_id("text 6")], "v2") == 1
    assert [i["used_in"] for i in store.labelled()] == ["v2"] and store.labelled(unused_only=True) == []
    assert store.stats()["statuses"] == {"unlabelled": 3, "labelled": 0, "used": 1, "discarded": 0}
    assert store.delete(item_id("text 7")) and not store.delete(item_id("text 7"))
    assert store.clear() == 3 and store.list(status="any")[0] == []


def test_wilson_interval() -> None:
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


# --- the service ---------------------------------------------------------------------------


def test_nothing_is_kept_when_the_inbox_is_off(small_store: Path) -> None:
    for client in ready_client(_settings(small_store, review=False)):
        assert client.app.state.review is None  # type: ignore[attr-defined]
        for _ in range(3):
            assert client.post("/v1/classify", json={"text": NONSENSE}).status_code == 200
        client.post("/v1/classify/batch", json={"texts": [NONSENSE, "hm"]})
        client.post("/model/parse", json={"text": NONSENSE})
        r = client.get("/v1/review", headers=AUTH)
        assert r.status_code == 409 and r.json()["error"] == "review_disabled"
        assert "INTENTLY_REVIEW" in r.json()["message"]
    assert not (small_store / DB_FILE).exists()


def test_every_door_feeds_one_item_and_the_api_labels_exports_and_deletes(inbox: TestClient) -> None:
    fast = FAST_PATH._value.get()  # type: ignore[attr-defined]
    for _ in range(3):  # POST /v1/classify: answered beneath the routing (app/fast_path.py)
        assert (
            inbox.post("/v1/classify", json={"text": NONSENSE, "top_k": 1}).json()["ranking"].__len__() == 1
        )
    assert FAST_PATH._value.get() - fast == 3  # type: ignore[attr-defined]
    inbox.post("/v1/classify/batch", json={"texts": [NONSENSE, "What time is it?"]})
    inbox.post("/model/parse", json={"text": NONSENSE.upper()})
    _flush(inbox)
    page = inbox.get("/v1/review", headers=AUTH).json()
    (item,) = [i for i in page["items"] if i["text"] == NONSENSE]
    assert set(item) >= FIELDS and page["next"] is None
    assert item["count"] == 5 and item["reason"] == "out_of_scope" and item["out_of_scope"] is True
    assert item["intent"] == item["ranking"][0]["intent"] and len(item["ranking"]) == 3
    assert item["label"] is None and item["model_version"] == inbox.get("/v1/model").json()["version"]
    assert "What time is it?" not in [i["text"] for i in page["items"]]  # confident: not kept

    # More items, then pages and filters.
    texts = [f"{NONSENSE} number {n}" for n in range(5)]
    inbox.post("/v1/classify/batch", json={"texts": texts})
    _flush(inbox)
    first = inbox.get("/v1/review?limit=4", headers=AUTH).json()
    second = inbox.get(f"/v1/review?limit=4&cursor={first['next']}", headers=AUTH).json()
    assert len(first["items"]) == 4 and second["next"] is None
    assert len({i["id"] for i in first["items"] + second["items"]}) == 6
    assert inbox.get("/v1/review?reason=sample", headers=AUTH).json()["items"] == []
    by_intent = inbox.get(f"/v1/review?intent={item['intent']}", headers=AUTH).json()["items"]
    assert item["id"] in {i["id"] for i in by_intent}

    # Label one, bulk-label others (an existing intent, a new one, oos), discard one.
    r = inbox.put(f"/v1/review/{item['id']}", json={"label": "oos"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["label"] == "oos"
    ids = [i["id"] for i in first["items"] + second["items"] if i["id"] != item["id"]]
    bulk = {
        "items": [
            {"id": ids[0], "label": "ask_time"},
            {"id": ids[1], "label": "order_food"},
            {"id": ids[2], "discard": True},
            {"id": "ffffffffffffffff", "label": "oos"},
        ]
    }
    r = inbox.post("/v1/review/labels", json=bulk, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"updated": 3, "missing": ["ffffffffffffffff"]}
    assert ids[2] not in {i["id"] for i in inbox.get("/v1/review", headers=AUTH).json()["items"]}
    assert [i["id"] for i in inbox.get("/v1/review?status=discarded", headers=AUTH).json()["items"]] == [
        ids[2]
    ]
    assert len(inbox.get("/v1/review?status=labelled", headers=AUTH).json()["items"]) == 3
    assert _counter(REVIEW_KEPT, "out_of_scope") >= 10

    # Bad labels and bodies are 4xx with the error shape; a missing item is a 404.
    for body in ({"label": "two words"}, {}, {"label": "x", "discard": True}, {"discard": None}, {"lab": 1}):
        r = inbox.put(f"/v1/review/{item['id']}", json=body, headers=AUTH)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", (body, r.text)
    assert inbox.put("/v1/review/nope", json={"label": "oos"}, headers=AUTH).status_code == 404
    assert inbox.get("/v1/review?cursor=abc", headers=AUTH).status_code == 422
    assert inbox.get("/v1/review?reason=bored", headers=AUTH).status_code == 422

    # Export: every format read back by training's own readers, the same rows.
    expected = {(NONSENSE, "oos"), (_text(inbox, ids[0]), "ask_time"), (_text(inbox, ids[1]), "order_food")}
    for fmt, ext in (("csv", "csv"), ("jsonl", "jsonl"), ("yaml", "yaml")):
        r = inbox.get(f"/v1/review/export?format={fmt}", headers=AUTH)
        assert r.status_code == 200, r.text
        rows = {(e.text, e.intent) for e in parse_bytes(r.content, ext, f"review.{ext}")}
        assert rows == expected, fmt
    assert inbox.get("/v1/review/export?format=csv", headers=AUTH).text.startswith("text,intent\n")

    stats = inbox.get("/v1/review/stats", headers=AUTH).json()
    assert stats["statuses"] == {"unlabelled": 2, "labelled": 3, "used": 0, "discarded": 1}
    assert set(stats["reasons"]) == set(REASONS) and stats["accuracy"]["labelled_sample"] == 0

    # Delete one, then all.
    r = inbox.delete(f"/v1/review/{item['id']}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert inbox.delete(f"/v1/review/{item['id']}", headers=AUTH).status_code == 404
    assert inbox.delete("/v1/review", headers=AUTH).json() == {"deleted": 5}
    assert inbox.get("/v1/review?status=any", headers=AUTH).json()["items"] == []


def _text(client: TestClient, item: str) -> str:
    found = client.get("/v1/review?status=any&limit=500", headers=AUTH).json()["items"]
    return next(i["text"] for i in found if i["id"] == item)


def test_live_accuracy_from_the_labelled_sample(small_store: Path) -> None:
    for client in ready_client(_settings(small_store, review_sample_rate=1.0)):
        texts = ["What time is it?", "play some jazz", "tell me a joke", NONSENSE]
        answers = client.post("/v1/classify/batch", json={"texts": texts}).json()["results"]
        _flush(client)
        items = {i["text"]: i for i in client.get("/v1/review", headers=AUTH).json()["items"]}
        assert {i["reason"] for i in items.values()} == {"sample"}
        # Two labelled as the model answered, one against it.
        changes = [
            {"id": items[texts[0]]["id"], "label": answers[0]["intent"]},
            {"id": items[texts[1]]["id"], "label": answers[1]["intent"]},
            {"id": items[NONSENSE]["id"], "label": "book_flight"},
        ]
        client.post("/v1/review/labels", json={"items": changes}, headers=AUTH)
        accuracy = client.get("/v1/review/stats", headers=AUTH).json()["accuracy"]
        low, high = wilson(2, 3)
        assert accuracy["labelled_sample"] == 3 and accuracy["correct"] == 2
        assert accuracy["estimate"] == pytest.approx(2 / 3)
        assert accuracy["low"] == pytest.approx(low) and accuracy["high"] == pytest.approx(high)


def test_an_unwritable_inbox_drops_and_counts_and_never_fails_a_request_or_logs_text(
    small_store: Path,
) -> None:
    (small_store / DB_FILE).mkdir()  # SQLite cannot open a directory: the inbox's store is unusable
    secret = "my card number is 4111 1111 and it was stolen"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    before = _counter(REVIEW_DROPPED, "out_of_scope", "store_unavailable")
    for client in ready_client(_settings(small_store, log_level="debug")):
        handler = Keep(logging.DEBUG)
        logging.getLogger("intently").addHandler(handler)
        try:
            answers = [client.post("/v1/classify", json={"text": f"{secret} {i}"}) for i in range(20)]
            answers.append(client.post("/v1/classify", json={"text": NONSENSE}))
            _flush(client)
            assert client.get("/v1/review", headers=AUTH).status_code == 503
        finally:
            logging.getLogger("intently").removeHandler(handler)
    assert [r.status_code for r in answers] == [200] * 21
    assert _counter(REVIEW_DROPPED, "out_of_scope", "store_unavailable") > before
    assert any("review inbox" in r.getMessage() for r in records)
    for r in records:
        assert "4111 1111" not in r.getMessage() and NONSENSE not in r.getMessage(), r.getMessage()


def test_a_store_written_by_another_worker_is_read_back(small_store: Path) -> None:
    """Two captures on one store (as two workers): one item, the counts of both."""
    store = DirectoryStore(small_store)
    predictor = Predictor.load(store.active_path() or "")
    a, b = (ReviewCapture(SqliteReviewStore(store), sample_rate=0.0) for _ in range(2))
    for capture in (a, b, a):
        capture.offer(predictor.predict_batch([NONSENSE], top_k=3), predictor.meta.threshold)
        capture.flush()
    (item,) = SqliteReviewStore(store).list()[0]
    assert item["count"] == 3
    with sqlite3.connect(small_store / DB_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- the operating point ---------------------------------------------------------------------


def test_the_operating_curve_passes_through_the_models_own_point(
    small_predictor: Predictor, assistant_test: list[Example]
) -> None:
    from training.evaluate import evaluate

    report = evaluate(small_predictor, assistant_test)
    curve, metrics = report["operating_curve"], report["metrics"]
    oos_rows = sum(e.intent == "oos" for e in assistant_test)
    assert curve["unknown"] == oos_rows and curve["known"] == len(assistant_test) - oos_rows
    # The model as served: its out-of-scope recall, and the known rows it turns away.
    assert curve["current"]["boundary"] == 0.5
    assert curve["current"]["unknown_caught"] == pytest.approx(metrics["oos_recall"])
    answers = small_predictor.predict_batch([e.text for e in assistant_test if e.intent != "oos"])
    turned_away = sum(a.out_of_scope for a in answers) / len(answers)
    assert curve["current"]["known_turned_away"] == pytest.approx(turned_away)
    # From everything turned away (boundary 0) to nothing; both shares fall as the boundary rises.
    points = curve["points"]
    assert points[0]["known_turned_away"] == 1 and points[0]["unknown_caught"] == 1
    for a, b in itertools.pairwise(points):
        assert b["known_turned_away"] <= a["known_turned_away"] and b["unknown_caught"] <= a["unknown_caught"]


def test_the_evaluation_route_and_the_inbox_give_the_operating_point(small_store: Path) -> None:
    for client in ready_client(_settings(small_store, review_sample_rate=1.0)):
        version = client.get("/v1/model").json()["version"]
        curve = client.get(f"/v1/models/{version}/evaluation").json()["operating_curve"]
        assert curve["known"] > 0 and len(curve["points"]) == 101 and curve["current"]["boundary"] == 0.5
        texts = ["What time is it?", "play some jazz", NONSENSE, "purple monkey dishwasher"]
        answers = client.post("/v1/classify/batch", json={"texts": texts}).json()["results"]
        _flush(client)
        items = {i["text"]: i["id"] for i in client.get("/v1/review", headers=AUTH).json()["items"]}
        labels = ["ask_time", "play_music", "oos", "oos"]
        changes = [{"id": items[t], "label": label} for t, label in zip(texts, labels, strict=True)]
        client.post("/v1/review/labels", json={"items": changes}, headers=AUTH)
        live = client.get("/v1/review/stats", headers=AUTH).json()["operating_point"]
        assert live["known"] == 2 and live["unknown"] == 2
        assert live["known_turned_away"] == sum(a["out_of_scope"] for a in answers[:2]) / 2
        assert live["unknown_caught"] == sum(a["out_of_scope"] for a in answers[2:]) / 2


def test_unlabelled_texts_are_the_unlabelled_items_most_seen_first(
    open_replica: Callable[[str], ModelStore],
) -> None:
    """What a from_review job offers distillation (training/jobs.py), on both backends."""
    store = open_review_store(open_replica("a"))
    seen = {"seen once": 1, "seen thrice": 3, "labelled": 5, "discarded": 7}
    store.record([_sighting(text, 100.0, count=n) for text, n in seen.items()])
    ids = {i["text"]: i["id"] for i in store.list(limit=10)[0]}
    store.set_labels([(ids["labelled"], "greet", False), (ids["discarded"], None, True)])
    assert store.unlabelled_texts(10) == ["seen thrice", "seen once"]
    assert store.unlabelled_texts(1) == ["seen thrice"]
