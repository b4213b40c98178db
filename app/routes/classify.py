"""Classification: one utterance, a batch, and Rasa NLU's `/model/parse`."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import Classifying, ClassifyingDep, check_text, check_top_k
from app.errors import ApiError
from app.metrics import observe_predictions
from app.rasa import PayloadError, read_payload
from app.schemas import (
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ParseRequest,
    ParseResponse,
    RasaEntity,
    RasaIntent,
)

router = APIRouter(tags=["classify"])
_ERRORS = {
    400: {"model": ErrorResponse, "description": "Malformed JSON"},
    413: {"model": ErrorResponse, "description": "Body over INTENTLY_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "Invalid field"},
    503: {"model": ErrorResponse, "description": "No model loaded yet"},
}
RASA_FALLBACK = "nlu_fallback"
EXTRACTOR = "IntentlyTagger"  # Rasa names the component that found an entity


def _json(payload: dict[str, Any]) -> Response:
    """The answer serialised once, here, by orjson (measured 15x faster than json here).

    Returning a Response skips FastAPI's re-validation of the dict against the
    response model, a per-request cost on the hottest path; the routes keep
    `response_model` for the OpenAPI schema, and tests check the shape.
    """
    return Response(orjson.dumps(payload), media_type="application/json")


async def classify_one(ctx: Classifying, text: str, top_k: int) -> bytes:
    """One utterance checked, classified and serialised: the route and its fast path (app.fast_path)."""
    check_text(text, ctx.settings)
    check_top_k(top_k, ctx.settings)
    (prediction,) = await ctx.batcher.classify(ctx.predictor, [text], top_k)
    observe_predictions([prediction.intent])
    return orjson.dumps(prediction.to_dict())


@router.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS)
async def classify(body: ClassifyRequest, ctx: ClassifyingDep) -> Response:
    """Classify one utterance: intent (null when out of scope), confidence and ranking."""
    return Response(await classify_one(ctx, body.text, body.top_k), media_type="application/json")


@router.post("/v1/classify/batch", response_model=BatchResponse, responses=_ERRORS)
async def classify_batch(body: BatchRequest, ctx: ClassifyingDep) -> Response:
    """Classify many utterances in one request; results come back in the order sent."""
    settings = ctx.settings
    if len(body.texts) > settings.max_batch:
        raise ApiError(
            422,
            "invalid_request",
            f"texts: {len(body.texts)} is over the batch limit of {settings.max_batch}",
        )
    for i, text in enumerate(body.texts):
        check_text(text, settings, field=f"texts.{i}")
    check_top_k(body.top_k, settings)
    predictions = await ctx.batcher.classify(ctx.predictor, body.texts, body.top_k)
    observe_predictions([p.intent for p in predictions])
    return _json({"results": [p.to_dict() for p in predictions]})


@router.post("/model/parse", response_model=ParseResponse, responses=_ERRORS, tags=["rasa"])
async def parse(body: ParseRequest, ctx: ClassifyingDep) -> ParseResponse:
    """Rasa NLU compatible: a client written for Rasa's HTTP API works unchanged.

    Out of scope is reported as Rasa's FallbackClassifier does: intent `nlu_fallback`.
    A button payload (`/intent{"entity": "value"}`) is read literally, as Rasa does.
    """
    check_text(body.text, ctx.settings)
    try:
        payload = read_payload(body.text)
    except PayloadError as exc:
        raise ApiError(422, "invalid_request", f"text: {exc}") from None
    if payload is not None:
        intent = RasaIntent(name=payload.intent, confidence=payload.confidence)
        entities = [RasaEntity(**e) for e in payload.entities]
        return ParseResponse(text=body.text, intent=intent, intent_ranking=[intent], entities=entities)
    (p,) = await ctx.batcher.classify(ctx.predictor, [body.text], 10)
    observe_predictions([p.intent])
    ranking = [RasaIntent(name=r.intent, confidence=r.confidence) for r in p.ranking]
    if p.out_of_scope:
        top = RasaIntent(name=RASA_FALLBACK, confidence=p.confidence)
        ranking = [top, *ranking]
    else:
        top = ranking[0]
    entities = [
        RasaEntity(
            entity=e.entity,
            value=e.value,
            start=e.start,
            end=e.end,
            confidence_entity=e.confidence,
            extractor=EXTRACTOR,
        )
        for e in p.entities
    ]
    return ParseResponse(text=body.text, intent=top, intent_ranking=ranking, entities=entities)
