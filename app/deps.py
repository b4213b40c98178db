"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.batcher import Batcher
from app.config import Settings
from app.errors import ApiError
from app.model_holder import ModelHolder
from app.review import ReviewCapture
from model.predictor import Predictor


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


def ready_predictor(holder: ModelHolder) -> Predictor:
    """The served model, or the 503 that every route needing one answers until it has loaded."""
    predictor = holder.predictor
    if predictor is None:
        reason = holder.error or "the model is still loading"
        raise ApiError(503, "model_not_ready", f"no model is loaded yet: {reason}", {"Retry-After": "1"})
    return predictor


async def _predictor(request: Request) -> Predictor:
    return ready_predictor(request.app.state.holder)


@dataclass(frozen=True, slots=True)
class ClassifyContext:
    """What a classify request needs, resolved as one dependency: each one costs per request."""

    predictor: Predictor
    batcher: Batcher
    settings: Settings
    review: ReviewCapture | None = None  # the review inbox's capture, when INTENTLY_REVIEW is on


async def classify_context(request: Request) -> ClassifyContext:
    """What the classify routes resolve first; app/fast_path.py calls it too."""
    state = request.app.state
    return ClassifyContext(ready_predictor(state.holder), state.batcher, state.settings, state.review)


SettingsDep = Annotated[Settings, Depends(_settings)]
HolderDep = Annotated[ModelHolder, Depends(_holder)]
PredictorDep = Annotated[Predictor, Depends(_predictor)]
ClassifyContextDep = Annotated[ClassifyContext, Depends(classify_context)]


def check_text(text: str, settings: Settings, field: str = "text") -> None:
    """Blank or over-long utterances are client errors; any other Unicode is classified."""
    if not text.strip():
        raise ApiError(422, "invalid_request", f"{field}: must not be empty or only whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") could not even be echoed back
        raise ApiError(
            422, "invalid_request", f"{field}: not valid Unicode (lone surrogate at position {exc.start})"
        ) from None
    if len(text) > settings.max_text_chars:
        raise ApiError(
            422,
            "invalid_request",
            f"{field}: {len(text)} characters is over the limit of {settings.max_text_chars}",
        )


def check_top_k(top_k: int, settings: Settings) -> None:
    if not 1 <= top_k <= settings.max_top_k:
        raise ApiError(422, "invalid_request", f"top_k: must be between 1 and {settings.max_top_k}")
