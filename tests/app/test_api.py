"""The HTTP API in-process (TestClient); the real server is tested in tests/e2e."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.conftest import ready_client
from tests.support.routes import app_routes


@pytest.fixture(scope="module")
def client(small_model_dir: Path) -> Iterator[TestClient]:
    yield from ready_client(
        Settings(model_dir=small_model_dir, max_text_chars=200, max_batch=8, max_body_bytes=4096)
    )


def test_classify(client: TestClient) -> None:
    r = client.post("/v1/classify", json={"text": "What time is it?"})
    assert r.status_code == 200
    body = r.json()
    assert body["intent"] == "ask_time" and body["out_of_scope"] is False
    assert len(body["ranking"]) == 5 and body["ranking"][0] == {
        "intent": "ask_time",
        "confidence": body["confidence"],
    }
    assert body["text"] == "What time is it?" and body["model_version"]


def test_out_of_scope_has_null_intent(client: TestClient) -> None:
    body = client.post("/v1/classify", json={"text": "how do I bake sourdough bread?", "top_k": 2}).json()
    assert body["out_of_scope"] is True and body["intent"] is None and len(body["ranking"]) == 2


def test_batch_matches_single(client: TestClient) -> None:
    texts = ["What time is it?", "turn off the lights", "play some jazz"]
    batch = client.post("/v1/classify/batch", json={"texts": texts, "top_k": 3}).json()["results"]
    singles = [client.post("/v1/classify", json={"text": t, "top_k": 3}).json() for t in texts]
    assert [b["intent"] for b in batch] == [s["intent"] for s in singles]
    assert [b["text"] for b in batch] == texts


def test_rasa_parse_shape(client: TestClient) -> None:
    body = client.post("/model/parse", json={"text": "What time is it?", "message_id": "m1"}).json()
    assert set(body) == {"text", "intent", "intent_ranking", "entities"}
    assert body["intent"]["name"] == "ask_time" and 0 < body["intent"]["confidence"] <= 1
    assert body["intent_ranking"][0]["name"] == "ask_time" and body["entities"] == []
    bread = "how do I bake sourdough bread?"
    oos = client.post("/model/parse", json={"text": bread}).json()
    assert oos["intent"]["name"] == "nlu_fallback"
    threshold = client.get("/v1/model").json()["threshold"]
    # Rasa's convention (the threshold), or the best intent's confidence where that is higher.
    best = oos["intent_ranking"][1]["confidence"]
    assert oos["intent"]["confidence"] == max(threshold, best) > 0


def test_rasa_button_payloads_are_read_literally(client: TestClient) -> None:
    def parse(text: str) -> dict:
        r = client.post("/model/parse", json={"text": text})
        assert r.status_code == 200, r.text
        return r.json()

    greet = parse("/greet")
    assert greet["intent"] == {"name": "greet", "confidence": 1.0}
    assert greet["intent_ranking"] == [greet["intent"]]
    inform = parse('/inform{"city": "Berlin", "day": ["mon", "tue"]}')
    assert [(e["entity"], e["value"]) for e in inform["entities"]] == [
        ("city", "Berlin"),
        ("day", "mon"),
        ("day", "tue"),
    ]
    first = inform["entities"][0]
    assert (first["start"], first["end"]) == (len("/inform"), len(inform["text"]))
    # Rasa's own intents are not the model's, and are answered all the same.
    assert parse("/restart")["intent"]["name"] == "restart"
    assert parse("/affirm@0.6")["intent"] == {"name": "affirm", "confidence": 0.6}
    # Text that only starts with a slash, or not in a payload's shape, is classified as any other.
    assert parse("/what time is it")["intent"]["name"] == "ask_time"
    assert parse('/inform["a"]')["intent"]["name"] != "inform"
    for bad in ('/inform{"city": Berlin}', "/inform@7", '/inform{"a": 1}}'):
        r = client.post("/model/parse", json={"text": bad})
        assert r.status_code == 422 and "payload" in r.json()["message"], (bad, r.text)


def test_rasa_emulation_modes(client: TestClient) -> None:
    def parse(mode: str, text: str = "What time is it?") -> dict:
        r = client.post(f"/model/parse?emulation_mode={mode}", json={"text": text, "message_id": 7})
        assert r.status_code == 200, r.text
        return r.json()

    wit = parse("WIT")
    assert (
        wit["text"] == "What time is it?"
        and wit["intents"][0]["name"] == "ask_time"
        and wit["entities"] == {}
    )
    luis = parse("luis")
    assert luis["prediction"]["topIntent"] == "ask_time"
    assert luis["prediction"]["intents"]["ask_time"]["score"] > 0.5 and luis["prediction"]["entities"] == {
        "$instance": {}
    }
    flow = parse("Dialogflow", '/inform{"city": "Berlin"}')["queryResult"]
    assert flow["intent"]["displayName"] == "inform" and flow["parameters"] == {"city": ["Berlin"]}
    assert flow["intentDetectionConfidence"] == 1.0
    r = client.post("/model/parse?emulation_mode=alexa", json={"text": "hi"})
    assert r.status_code == 400 and "WIT, LUIS, DIALOGFLOW" in r.json()["message"]


def test_rasa_version_and_status(client: TestClient) -> None:
    assert set(client.get("/version").json()) == {"version", "minimum_compatible_version"}
    status = client.get("/status").json()
    assert status["model_id"] == client.get("/v1/model").json()["version"]
    assert status["num_active_training_jobs"] == 0


def test_rasa_token_guards_parse_and_status(small_model_dir: Path) -> None:
    settings = Settings(model_dir=small_model_dir, rasa_token="s3cret")
    for tokened in ready_client(settings):
        for path in ("/model/parse", "/status"):
            call = tokened.post if path == "/model/parse" else tokened.get
            kwargs = {"json": {"text": "hi"}} if path == "/model/parse" else {}
            assert call(path, **kwargs).status_code == 401
            assert call(f"{path}?token=wrong", **kwargs).status_code == 401
            assert call(f"{path}?token=s3cret", **kwargs).status_code == 200
        assert tokened.get("/version").status_code == 200
        # The project's own API is not Rasa's: its access rules stay as they were.
        assert tokened.post("/v1/classify", json={"text": "hi"}).status_code == 200


def test_intents_and_model(client: TestClient) -> None:
    intents = client.get("/v1/intents").json()
    names = [i["intent"] for i in intents["intents"]]
    assert "ask_time" in names and "oos" not in names
    assert all(i["examples"] >= 40 for i in intents["intents"]) and intents["oos_examples"] > 100
    model = client.get("/v1/model").json()
    assert "vocab" not in model and model["vocab_size"] > 100 and model["version"] == intents["model_version"]
    assert {"threshold", "temperature", "labels", "data", "metrics", "model", "created_at"} <= set(model)


@pytest.mark.parametrize(
    "path, payload, status, message",
    [
        ("/v1/classify", {"text": ""}, 422, "must not be empty"),
        ("/v1/classify", {"text": " \t\n "}, 422, "must not be empty"),
        ("/v1/classify", {"text": "x" * 201}, 422, "over the limit of 200"),
        ("/v1/classify", {"text": "hi", "top_k": 0}, 422, "top_k"),
        ("/v1/classify", {"text": "hi", "top_k": 101}, 422, "top_k"),
        ("/v1/classify", {"text": "hi", "top_k": "3"}, 422, "top_k"),
        ("/v1/classify", {"text": 5}, 422, "text"),
        ("/v1/classify", {"txt": "hi"}, 422, "text: Field required"),
        ("/v1/classify", ["hi"], 422, "dictionary"),
        ("/v1/classify/batch", {"texts": []}, 422, "texts"),
        ("/v1/classify/batch", {"texts": ["a"] * 9}, 422, "batch limit of 8"),
        ("/v1/classify/batch", {"texts": ["ok", ""]}, 422, "texts.1"),
        ("/v1/classify/batch", {"texts": "hi"}, 422, "texts"),
        ("/model/parse", {"text": ""}, 422, "must not be empty"),
    ],
)
def test_bad_input_is_a_clear_4xx(
    client: TestClient, path: str, payload: object, status: int, message: str
) -> None:
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and message in body["message"]


def test_malformed_json_and_oversized_body(client: TestClient) -> None:
    r = client.post("/v1/classify", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "malformed_json"
    r = client.post("/v1/classify", content=b'{"text": "' + b"a" * 5000 + b'"}')
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert client.post("/v1/classify", json={"text": "still fine"}).status_code == 200


def test_json_without_content_type_is_accepted(client: TestClient) -> None:
    r = client.post("/v1/classify", content=b'{"text": "What time is it?"}')
    assert r.status_code == 200 and r.json()["intent"] == "ask_time"


@pytest.mark.parametrize(
    "text",
    ["café à Paris", "今何時ですか", "🙂🙂🙂", "מה השעה", "ما هو الوقت", "a\x00b\x1b[31m", "\u200b\u202eabc"],
)
def test_any_unicode_is_classified(client: TestClient, text: str) -> None:
    r = client.post("/v1/classify", json={"text": text})
    assert r.status_code == 200 and r.json()["text"] == text


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = client.get("/healthz").headers["x-request-id"]
    assert len(made) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_every_answer_names_its_worker(client: TestClient) -> None:
    answers = [
        client.post("/v1/classify", json={"text": "What time is it?"}),  # the fast path
        client.post("/v1/classify/batch", json={"texts": ["hi"]}),
        client.post("/v1/classify", json={"text": " "}),  # an error, from the route
        client.post("/v1/classify", content=b"x" * 5000),  # refused on its Content-Length alone
        client.get("/no-such-page"),
        client.get("/healthz"),
    ]
    assert [r.status_code for r in answers] == [200, 200, 422, 413, 404, 200]
    assert {r.headers["x-intently-worker"] for r in answers} == {str(os.getpid())}


def test_utterances_are_not_logged_at_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    secret = "my card number is 4111 1111"
    logging.getLogger("intently").addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="intently"):
            client.post("/v1/classify", json={"text": secret})
    finally:
        logging.getLogger("intently").removeHandler(caplog.handler)
    assert any("/v1/classify" in r.getMessage() for r in caplog.records)
    assert not any("4111 1111" in r.getMessage() for r in caplog.records)  # a hex request id may hold "4111"


def test_metrics_count_requests(client: TestClient) -> None:
    client.post("/v1/classify", json={"text": "What time is it?"})
    text = client.get("/metrics").text
    assert 'intently_http_requests_total{method="POST",route="/v1/classify",status="200"}' in text
    assert 'intently_predictions_total{intent="ask_time"}' in text
    assert "intently_model_info{version=" in text
    assert "intently_http_request_duration_seconds_bucket" in text


# Served, but not part of the API: FastAPI's own documentation pages and the playground's files.
UNDOCUMENTED = {
    ("GET", "/"),
    ("GET", "/static/{name}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


def test_openapi_documents_every_route(small_store_template: Path) -> None:
    """Every route the app answers (walked from the app, admin ones included) is in the schema with
    its method, a description, a success answer with its media type, and the error shape for its
    4xx answers; a route left out of the schema, or documented bare, fails here."""
    app = create_app(Settings(model_store=small_store_template, admin_token="t"))
    schema = app.openapi()
    documented = {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops}
    answered = set(app_routes(app)) - UNDOCUMENTED
    assert answered - documented == set(), "routes missing from the OpenAPI schema"
    assert documented - answered == set(), "documented routes the app does not answer"
    assert len(answered) >= 20
    for method, path in sorted(answered):
        op = schema["paths"][path][method.lower()]
        assert op.get("summary") and op.get("description"), (method, path)
        success = [code for code in op["responses"] if code.startswith("2")]
        assert success, (method, path, op["responses"])
        answer = op["responses"][success[0]]
        if path != "/metrics":  # Prometheus text, whose media type carries its version
            assert answer.get("content"), (method, path, answer)
        if "application/json" in answer.get("content", {}):
            assert answer["content"]["application/json"].get("schema"), (method, path)
        for code, documented_error in op["responses"].items():
            if code.startswith("4") and code != "422":
                content = documented_error.get("content", {}).get("application/json", {})
                ref = content.get("schema", {}).get("$ref", "")
                assert ref.endswith("/ErrorResponse"), (method, path, code)
    # Routes that take parameters or a body document their 422.
    for method, path in answered:
        op = schema["paths"][path][method.lower()]
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], (method, path)


def test_not_ready_when_the_model_cannot_load(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    # The lifespan awaits the first load: once the client is up, the load has failed, not pending.
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        reason = r.json()["reason"]
        assert "model.json" in reason and "not an Intently model" in reason, reason
        assert client.get("/healthz").status_code == 200
        r = client.post("/v1/classify", json={"text": "hi"})
        assert r.status_code == 503 and r.json()["error"] == "model_not_ready"
        assert reason in r.json()["message"] and r.headers["retry-after"] == "1"


def test_rasa_parse_of_retrieval_intents_roles_and_patterns(rasa_bot: tuple, tmp_path: Path) -> None:
    from model.artifact import save

    result, _ = rasa_bot
    model_dir = save(result.net, result.meta, tmp_path / "bot")
    with TestClient(create_app(Settings(model_dir=model_dir))) as bot:
        name = bot.post("/model/parse", json={"text": "what is your name"}).json()
        assert name["intent"]["name"] == "chitchat"
        assert all("/" not in r["name"] for r in name["intent_ranking"])
        chitchat = next(r for r in name["intent_ranking"] if r["name"] == "chitchat")
        assert chitchat == name["intent"]  # the sum over chitchat/ask_name and chitchat/ask_age
        selector = name["response_selector"]
        assert selector["all_retrieval_intents"] == ["chitchat"]
        for key in ("chitchat", "default"):
            picked = selector[key]["response"]
            assert picked["intent_response_key"] == "chitchat/ask_name"
            assert picked["utter_action"] == "utter_chitchat/ask_name"
            assert picked["responses"] == [{"text": "I am a bot."}]
            assert selector[key]["ranking"][0]["intent_response_key"] == "chitchat/ask_name"
            assert abs(sum(r["confidence"] for r in selector[key]["ranking"]) - 1) < 1e-4
        age = bot.post("/model/parse", json={"text": "how old are you"}).json()["response_selector"][
            "default"
        ]
        assert (
            age["response"]["intent_response_key"] == "chitchat/ask_age"
            and age["response"]["responses"] is None
        )
        flight = bot.post("/model/parse", json={"text": "fly from tokyo to berlin"}).json()
        assert [(e["value"], e["role"], e["extractor"]) for e in flight["entities"]] == [
            ("tokyo", "departure", "IntentlyTagger"),
            ("berlin", "destination", "IntentlyTagger"),
        ]
        assert "group" not in flight["entities"][0]
        found = bot.post("/model/parse", json={"text": "hello reykjavik"}).json()["entities"]
        assert [(e["entity"], e["value"]) for e in found] == [("city", "reykjavik")]
        payload = bot.post("/model/parse", json={"text": '/inform{"city": "oslo"}'}).json()
        assert "confidence_entity" not in payload["entities"][0] and "response_selector" not in payload
