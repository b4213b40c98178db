"""Rasa NLU's conventions beside classification: button payloads, and emulation modes.

A Rasa bot's buttons send their payload as the message text. Rasa's RegexMessageHandler
reads it literally (intent, optional `@confidence`, optional JSON object of entities)
instead of classifying it, and so does `/model/parse` here: a payload names Rasa's own
intents (`/restart`, `/session_start`) as readily as the model's. `emulation_mode` answers
in the shape of wit.ai, LUIS v3 or Dialogflow ES, as Rasa's emulators do.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_PAYLOAD = re.compile(
    r"^/(?P<intent>[^{@\s]+)(?:@(?P<confidence>[0-9.eE+-]+))?(?P<entities>\{.*\})?\s*$", re.S
)


class PayloadError(ValueError):
    """A message that starts like a payload but is not a valid one; the message says why."""


@dataclass(frozen=True)
class Payload:
    intent: str
    confidence: float = 1.0
    entities: list[dict[str, Any]] = field(default_factory=list)


def read_payload(text: str) -> Payload | None:
    """The payload a message text is, or None for ordinary text (to classify): "/help me" is text."""
    match = _PAYLOAD.match(text) if text.startswith("/") else None
    if match is None:
        return None
    confidence = 1.0
    if match["confidence"] is not None:
        try:
            confidence = float(match["confidence"])
        except ValueError:
            confidence = math.nan
        if not 0.0 <= confidence <= 1.0:
            raise PayloadError(f"payload confidence {match['confidence']!r} must be a number in 0..1")
    entities: list[dict[str, Any]] = []
    if match["entities"] is not None:
        try:
            values = json.loads(match["entities"])
        except (json.JSONDecodeError, RecursionError):
            raise PayloadError(f"payload entities {match['entities'][:60]!r} are not a JSON object") from None
        if not isinstance(values, dict):
            raise PayloadError("payload entities must be a JSON object of entity to value")
        start, end = match.start("entities"), match.end("entities")
        for name, value in values.items():
            # A list gives one entity a value, as Rasa does.
            for item in value if isinstance(value, list) else [value]:
                entities.append({"entity": name, "value": item, "start": start, "end": end})
    return Payload(match["intent"], confidence, entities)


def retrieval_answer(
    ranking: Sequence[tuple[str, float]], responses: Mapping[str, list[Any]]
) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
    """Rasa's view of retrieval intents (`chitchat/ask_name`) from the model's full ranking.

    The intent is the part before the slash, with the summed confidence of its sub-intents;
    `response_selector` names the sub-intent, under its retrieval intent and under
    "default" (a single ResponseSelector over all of them), so that Rasa's `respond_chitchat`
    finds its `utter_action` either way. Without retrieval intents: the ranking as it was, None.
    """
    if not any("/" in name for name, _ in ranking):
        return list(ranking), None
    grouped: dict[str, float] = {}
    for name, p in ranking:
        base = name.split("/", 1)[0]
        grouped[base] = grouped.get(base, 0.0) + p
    merged = sorted(grouped.items(), key=lambda item: -item[1])
    subs = [(name, p) for name, p in ranking if "/" in name]
    selector: dict[str, Any] = {"all_retrieval_intents": sorted({n.split("/", 1)[0] for n, _ in subs})}
    for key in (*selector["all_retrieval_intents"], "default"):
        members = [(n, p) for n, p in subs if key == "default" or n.split("/", 1)[0] == key]
        total = sum(p for _, p in members) or 1.0
        ranked: list[dict[str, Any]] = [
            {"id": zlib.crc32(n.encode()), "confidence": round(p / total, 6), "intent_response_key": n}
            for n, p in members
        ]
        ranked.sort(key=lambda r: -r["confidence"])
        top = ranked[0]
        selector[key] = {
            "response": {
                **top,
                "responses": responses.get(f"utter_{top['intent_response_key']}"),
                "utter_action": f"utter_{top['intent_response_key']}",
            },
            "ranking": ranked,
        }
    return merged, selector


EMULATION_MODES = ("WIT", "LUIS", "DIALOGFLOW")


def emulate(mode: str, parsed: dict[str, Any]) -> dict[str, Any]:
    """A `/model/parse` answer in the shape another NLU service gives, as Rasa's `emulation_mode` does.

    `mode` is one of EMULATION_MODES, in any case; anything else is a ValueError.
    """
    kind = mode.upper()
    text, intent, entities = parsed["text"], parsed["intent"], parsed["entities"]
    if kind == "WIT":  # wit.ai's /message
        grouped: dict[str, list[dict[str, Any]]] = {}
        for e in entities:
            role = e.get("role") or e["entity"]
            grouped.setdefault(f"{e['entity']}:{role}", []).append(
                {
                    "confidence": e.get("confidence_entity") or 1,
                    "name": e["entity"],
                    "value": e["value"],
                    "body": text[e["start"] : e["end"]],
                    "start": e["start"],
                    "end": e["end"],
                    "role": role,
                    "entities": [],
                }
            )
        return {"text": text, "intents": [intent], "entities": grouped}
    if kind == "LUIS":  # the LUIS v3 /predict endpoint
        found: dict[str, Any] = {"$instance": {}}
        for e in entities:
            key = e.get("role") or e["entity"]
            found[key] = [e["value"]]
            found["$instance"][key] = [
                {
                    "role": e.get("role"),
                    "type": e["entity"],
                    "text": e["value"],
                    "startIndex": e["start"],
                    "length": e["end"] - e["start"],
                    "score": e.get("confidence_entity"),
                    "modelType": e.get("extractor"),
                }
            ]
        ranking = parsed.get("intent_ranking") or [intent]
        return {
            "query": text,
            "prediction": {
                "normalizedQuery": text,
                "topIntent": intent["name"],
                "intents": {r["name"]: {"score": r["confidence"]} for r in ranking},
                "entities": found,
            },
        }
    if kind == "DIALOGFLOW":  # Dialogflow ES's detectIntent
        parameters: dict[str, list[Any]] = {}
        for e in entities:
            parameters.setdefault(e["entity"], []).append(e["value"])
        return {
            "responseId": str(uuid.uuid4()),
            "queryResult": {
                "queryText": text,
                "action": intent["name"],
                "parameters": parameters,
                "fulfillmentText": "",
                "fulfillmentMessages": [],
                "outputContexts": [],
                "intent": {"name": intent["name"], "displayName": intent["name"]},
                "intentDetectionConfidence": intent["confidence"],
            },
        }
    raise ValueError(f"emulation_mode must be one of {', '.join(EMULATION_MODES)}, not {mode[:40]!r}")
