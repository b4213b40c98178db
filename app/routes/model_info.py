"""What the active model knows: its intents and its `model.json` facts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import PredictorDep
from app.schemas import IntentsResponse

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
