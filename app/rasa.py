"""Rasa NLU's conventions that are not classification: button payloads such as `/inform{"city": "Berlin"}`.

A Rasa bot's buttons send their payload as the message text. Rasa's RegexMessageHandler
reads it literally (intent, optional `@confidence`, optional JSON object of entities)
instead of classifying it, and so does `/model/parse` here: a payload names Rasa's own
intents (`/restart`, `/session_start`) as readily as the model's.
"""

from __future__ import annotations

import json
import math
import re
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
