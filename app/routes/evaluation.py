"""The evaluation report of a version: scores per intent, confusion matrix and its picture.

Open like `/v1/model`: these are numbers on held-out data. The utterances of
the most confused pairs are training data, so they come only with the admin
token (or INTENTLY_PUBLIC_EXAMPLES). Training writes the report when it
stores a version; this only serves it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from app.admin import UtteranceAccessDep
from app.deps import HolderDep
from app.schemas import ErrorResponse, EvaluationResponse
from app.version_files import confusion_png, report, version_dir

router = APIRouter(tags=["model"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "A wrong admin token was sent"},
    404: {"model": ErrorResponse, "description": "No such version, or it has no report (`no_report`)"},
    422: {"model": ErrorResponse, "description": "Not a valid version id"},
}


@router.get("/v1/models/{version}/evaluation", response_model=EvaluationResponse, responses=_ERRORS)
async def evaluation(
    version: str, request: Request, holder: HolderDep, with_examples: UtteranceAccessDep
) -> dict[str, Any]:
    """Per-intent precision, recall and F1, the confusion matrix and the most confused pairs.

    Measured on the version's held-out examples when it was trained.
    """
    folder = await asyncio.to_thread(version_dir, holder, version)
    stored = await asyncio.to_thread(report, folder, version)
    pairs = [
        {k: v for k, v in pair.items() if with_examples or k != "examples"}
        for pair in stored.get("confused_pairs", [])
    ]
    return {
        "version": version,
        "evaluated_on": stored.get("evaluated_on", {}),
        "metrics": stored["metrics"],
        "per_intent": [{"intent": k, **v} for k, v in sorted(stored["per_intent"].items())],
        "labels": stored["labels"],
        "confusion_matrix": stored["confusion_matrix"],
        "confused_pairs": pairs,
        "examples_included": with_examples,
        # The path as the client must ask for it: behind a proxy's prefix too.
        "confusion_png": f"{request.scope.get('root_path', '')}/v1/models/{version}/confusion.png",
        "operating_curve": stored.get("operating_curve"),
    }


@router.get(
    "/v1/models/{version}/confusion.png",
    response_class=FileResponse,
    responses={**_ERRORS, 200: {"content": {"image/png": {}}, "description": "The confusion matrix"}},
)
async def confusion_picture(version: str, holder: HolderDep) -> FileResponse:
    """The confusion matrix as a picture: rows are true intents, columns predicted, colour the row share."""
    path = confusion_png(await asyncio.to_thread(version_dir, holder, version), version)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
