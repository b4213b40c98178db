"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app import metrics
from app.deps import HolderDep
from app.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
async def readyz(holder: HolderDep) -> JSONResponse:
    """Ready once a model is loaded: 200, else 503 (keep traffic away)."""
    if holder.predictor is None:
        reason = holder.error or "model loading"
        return JSONResponse({"ready": False, "model_version": None, "reason": reason}, 503)
    return JSONResponse({"ready": True, "model_version": holder.predictor.version, "reason": None})


@router.get("/metrics", response_class=Response)
async def prometheus() -> Response:
    """Prometheus text format; merged across worker processes."""
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
