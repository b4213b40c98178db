"""Rasa NLU's HTTP API: `/model/parse` (with button payloads and emulation modes), `/version`, `/status`.

A client written for a Rasa server (`RasaNLUHttpInterpreter`, a bot's custom connector)
works unchanged against these.
"""

from __future__ import annotations

import asyncio
import hmac
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from app.deps import ClassifyContextDep, HolderDep, check_text
from app.errors import ApiError
from app.metrics import observe_predictions
from app.rasa import EMULATION_MODES, PayloadError, emulate, read_payload, retrieval_answer
from app.routes.classify import ERRORS
from app.schemas import ParseRequest, ParseResponse, RasaEntity, RasaIntent, RasaStatus, RasaVersion
from store.jobs import open_job_store

router = APIRouter(tags=["rasa"])
RASA_FALLBACK = "nlu_fallback"
EXTRACTOR = "IntentlyTagger"  # Rasa names the component that found an entity
PATTERN_EXTRACTOR = "RegexEntityExtractor"  # regexes and lookup tables, as Rasa's component
RANKING = 10  # intents in `intent_ranking`, as Rasa's default


async def rasa_access(request: Request, token: Annotated[str | None, Query()] = None) -> None:
    """With INTENTLY_RASA_TOKEN set, Rasa's endpoints want it as `?token=`, as Rasa's --auth-token."""
    secret = request.app.state.settings.rasa_token
    expected = secret.get_secret_value() if secret is not None else ""
    if expected and not hmac.compare_digest((token or "").encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(401, "unauthorized", "missing or wrong token: pass it as ?token=...")


RasaAccess = Depends(rasa_access)


@router.post(
    "/model/parse",
    response_model=ParseResponse,
    response_model_exclude_none=True,  # Rasa leaves out what it does not know (a payload's confidences)
    responses=ERRORS,
    dependencies=[RasaAccess],
)
async def parse(
    body: ParseRequest,
    ctx: ClassifyContextDep,
    emulation_mode: Annotated[str | None, Query(description=f"One of {', '.join(EMULATION_MODES)}.")] = None,
) -> Any:
    """Rasa NLU compatible: a client written for Rasa's HTTP API works unchanged.

    Out of scope is reported as Rasa's FallbackClassifier does: intent `nlu_fallback`.
    A button payload (`/intent{"entity": "value"}`) is read literally, as Rasa does.
    """
    if emulation_mode is not None and emulation_mode.upper() not in EMULATION_MODES:
        raise ApiError(400, "invalid_request", f"emulation_mode must be one of {', '.join(EMULATION_MODES)}")
    check_text(body.text, ctx.settings)
    answer = await _parse(body.text, ctx)
    if emulation_mode is None:
        return answer
    return JSONResponse(emulate(emulation_mode, answer.model_dump()))


async def _parse(text: str, ctx: ClassifyContextDep) -> ParseResponse:
    try:
        payload = read_payload(text)
    except PayloadError as exc:
        raise ApiError(422, "invalid_request", f"text: {exc}") from None
    if payload is not None:
        intent = RasaIntent(name=payload.intent, confidence=payload.confidence)
        entities = [RasaEntity(**e) for e in payload.entities]
        return ParseResponse(text=text, intent=intent, intent_ranking=[intent], entities=entities)
    predictor = ctx.predictor
    # Retrieval intents are summed over their sub-intents: that needs every intent's confidence.
    retrieval = any("/" in name for name in predictor.intents)
    (p,) = await ctx.batcher.classify(predictor, [text], len(predictor.intents) if retrieval else RANKING)
    observe_predictions([p.intent])
    if ctx.review is not None:
        ctx.review.offer([p], predictor.meta.threshold)
    merged, selector = retrieval_answer(
        [(r.intent, r.confidence) for r in p.ranking], predictor.meta.responses
    )
    ranking = [RasaIntent(name=name, confidence=round(c, 6)) for name, c in merged[:RANKING]]
    if p.out_of_scope:
        # Rasa's FallbackClassifier gives nlu_fallback the threshold as its confidence, above the
        # intents under it. Another rule (oos examples, unknown words, the detector) can turn a more
        # probable intent away: nlu_fallback then takes that intent's confidence, so that
        # `intent_ranking` stays in descending order and no number contradicts another.
        best = ranking[0].confidence if ranking else 0.0
        top = RasaIntent(name=RASA_FALLBACK, confidence=max(predictor.meta.threshold, best))
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
            extractor=PATTERN_EXTRACTOR if e.by_pattern else EXTRACTOR,
            role=e.role,
            group=e.group,
        )
        for e in p.entities
    ]
    return ParseResponse(
        text=text, intent=top, intent_ranking=ranking, entities=entities, response_selector=selector
    )


def _package_version() -> str:
    try:
        return version("intently")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


@router.get("/version", response_model=RasaVersion)
async def rasa_version() -> dict[str, str]:
    """The server's version, in the shape of Rasa's `/version` (open, as Rasa's is)."""
    current = _package_version()
    return {"version": current, "minimum_compatible_version": current}


@router.get("/status", response_model=RasaStatus, responses=ERRORS, dependencies=[RasaAccess])
async def rasa_status(holder: HolderDep) -> dict[str, Any]:
    """The loaded model and the training jobs running, in the shape of Rasa's `/status`."""
    predictor = holder.predictor
    running = 0
    if holder.store is not None:
        jobs = await asyncio.to_thread(open_job_store(holder.store).list)
        running = sum(j["state"] == "running" for j in jobs)
    return {
        "model_id": predictor.version if predictor else None,
        "model_file": predictor.version if predictor else None,
        "num_active_training_jobs": running,
    }
