"""What the active model knows: its intents, a few of their training examples, its `model.json` facts."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from app.admin import UtteranceAccessDep, admin_token
from app.deps import HolderDep, PredictorDep, SettingsDep
from app.errors import ApiError
from app.schemas import ErrorResponse, IntentExamples, IntentsResponse
from app.version_files import MAX_EXAMPLES, intent_examples, version_dir

router = APIRouter(tags=["model"])


@router.get("/v1/intents", response_model=IntentsResponse)
async def intents(predictor: PredictorDep) -> dict[str, Any]:
    """The intents of the active model, with how many training examples each had."""
    counts: dict[str, int] = predictor.meta.data.get("intents", {})
    return {
        "model_version": predictor.version,
        "intents": [{"intent": i, "examples": int(counts.get(i, 0))} for i in predictor.intents],
        "oos_examples": int(counts.get(predictor.meta.oos_label or "", 0)),
    }


@router.get("/v1/model")
async def model_facts(predictor: PredictorDep) -> dict[str, Any]:
    """The active model's `model.json` (without the vocabulary, which is only counted)."""
    facts = predictor.meta.to_dict(with_vocab=False)
    facts["vocab_size"] = len(predictor.meta.vocab)
    return facts


@router.get(
    "/v1/intents/{intent}/examples",
    response_model=IntentExamples,
    responses={
        401: {"model": ErrorResponse, "description": "Examples are private and no or a wrong token was sent"},
        403: {"model": ErrorResponse, "description": "Examples are private and the admin API is off"},
        404: {"model": ErrorResponse, "description": "The active model has no such intent"},
        422: {"model": ErrorResponse},
    },
)
async def examples(
    intent: str,
    predictor: PredictorDep,
    holder: HolderDep,
    allowed: UtteranceAccessDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=MAX_EXAMPLES, description="How many examples.")] = 5,
) -> dict[str, Any]:
    """A few training examples of an intent of the active model, to show what it was taught.

    Training data may hold real users' words: without INTENTLY_PUBLIC_EXAMPLES
    this needs the admin token.
    """
    if not allowed:
        if admin_token(settings) is None:
            raise ApiError(
                403,
                "examples_private",
                "training examples are private on this server: the admin API is off and "
                "INTENTLY_PUBLIC_EXAMPLES is not set",
            )
        raise ApiError(
            401,
            "unauthorized",
            "training examples are private on this server: send the admin bearer token, "
            "or start the server with INTENTLY_PUBLIC_EXAMPLES=true",
            {"WWW-Authenticate": "Bearer"},
        )
    if intent not in predictor.labels:
        raise ApiError(404, "not_found", f"the active model has no intent {intent[:128]!r}")
    folder = await asyncio.to_thread(version_dir, holder, predictor.version)
    total, texts = await asyncio.to_thread(intent_examples, folder, intent, limit)
    return {"model_version": predictor.version, "intent": intent, "total": total, "examples": texts}
