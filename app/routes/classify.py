"""Classification: one utterance and a batch (Rasa NLU's `/model/parse` is in app/routes/rasa.py)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import ClassifyContext, ClassifyContextDep, check_text, check_top_k
from app.errors import ApiError
from app.metrics import observe_predictions
from app.review import RANKED
from app.schemas import (
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
)
from model.predictor import Prediction

router = APIRouter(tags=["classify"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON"},
    413: {"model": ErrorResponse, "description": "Body over INTENTLY_MAX_BODY_BYTES"},
    422: {"model": ErrorResponse, "description": "Invalid field"},
    503: {"model": ErrorResponse, "description": "No model loaded yet"},
}


def _json(payload: dict[str, Any]) -> Response:
    """The answer serialised once, here, by orjson (far faster than json on this hot path).

    Returning a Response skips FastAPI's re-validation of the dict against the
    response model, a per-request cost on the hottest path; the routes keep
    `response_model` for the OpenAPI schema, and tests check the shape.
    """
    return Response(orjson.dumps(payload), media_type="application/json")


async def classify_one(ctx: ClassifyContext, text: str, top_k: int) -> bytes:
    """One utterance checked, classified and serialised."""
    check_text(text, ctx.settings)
    check_top_k(top_k, ctx.settings)
    review = ctx.review
    if review is None:
        (prediction,) = await ctx.batcher.classify(ctx.predictor, [text], top_k)
        observe_predictions([prediction.intent])
        return orjson.dumps(prediction.to_dict())
    # The inbox keeps the top three (and judges the margin of the top two) whatever top_k was asked.
    (prediction,) = await ctx.batcher.classify(ctx.predictor, [text], max(top_k, RANKED))
    observe_predictions([prediction.intent])
    review.offer([prediction], ctx.predictor.meta.threshold)
    return orjson.dumps(_answer(prediction, top_k))


def _answer(prediction: Prediction, top_k: int) -> dict[str, Any]:
    answer = prediction.to_dict()
    answer["ranking"] = answer["ranking"][:top_k]
    return answer


@router.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS)
async def classify(body: ClassifyRequest, ctx: ClassifyContextDep) -> Response:
    """Classify one utterance: intent (null when out of scope), confidence and ranking."""
    # app/fast_path.py calls this too, beneath the routing: a new parameter here turns it off.
    return Response(await classify_one(ctx, body.text, body.top_k), media_type="application/json")


@router.post("/v1/classify/batch", response_model=BatchResponse, responses=ERRORS)
async def classify_batch(body: BatchRequest, ctx: ClassifyContextDep) -> Response:
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
    review = ctx.review
    top_k = body.top_k if review is None else max(body.top_k, RANKED)
    predictions = await ctx.batcher.classify(ctx.predictor, body.texts, top_k)
    observe_predictions([p.intent for p in predictions])
    if review is None:
        return _json({"results": [p.to_dict() for p in predictions]})
    review.offer(predictions, ctx.predictor.meta.threshold)
    return _json({"results": [_answer(p, body.top_k) for p in predictions]})
