"""Admin: the review inbox, the live requests the model was unsure of (app/review.py keeps them).

List and filter them, label them (an intent, a new intent, `oos`) or set them aside, one by one or
in bulk, delete them, and export the labelled ones as training data; a training job with
`from_review: true` appends them to the active version's data (app/routes/training_jobs.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.admin import AdminDep
from app.errors import ApiError
from app.metrics import REVIEW_LABELLED, labelled
from app.review import ReviewCapture
from app.schemas import (
    ErrorResponse,
    ReviewBulk,
    ReviewBulkResult,
    ReviewDeleted,
    ReviewItem,
    ReviewList,
    ReviewReason,
    ReviewStats,
    ReviewUpdate,
)
from store.review import OOS, ReviewStore
from training.readers import DataError, Example

Result = TypeVar("Result")
router = APIRouter(tags=["admin: review inbox"], dependencies=[AdminDep])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorResponse, "description": "The admin API is off"},
    409: {"model": ErrorResponse, "description": "The review inbox is off (INTENTLY_REVIEW)"},
    422: {"model": ErrorResponse, "description": "Invalid field"},
    503: {"model": ErrorResponse, "description": "The inbox's store is locked or unreachable; retry"},
}
WITH_404 = {**ERRORS, 404: {"model": ErrorResponse, "description": "No such item"}}
WITH_BODY = {
    **ERRORS,
    400: {"model": ErrorResponse, "description": "Malformed JSON"},
    413: {"model": ErrorResponse, "description": "Body over INTENTLY_MAX_BODY_BYTES"},
}
Status = Literal["unlabelled", "labelled", "used", "discarded", "any"]


async def _inbox(request: Request) -> ReviewStore:
    capture: ReviewCapture | None = request.app.state.review
    if capture is None:
        raise ApiError(
            409,
            "review_disabled",
            "the review inbox is off; set INTENTLY_REVIEW=true on the server to keep requests for review",
        )
    return capture.store


InboxDep = Annotated[ReviewStore, Depends(_inbox)]


async def _call(func: Callable[..., Result], *args: Any) -> Result:
    """A store call off the event loop; StoreUnavailable becomes a 503 (app/errors.py)."""
    return await asyncio.to_thread(func, *args)


def _checked(change: ReviewUpdate, field: str = "body") -> tuple[str | None, bool]:
    try:
        label, discard = change.change()
        if label is not None:
            # A label becomes a training row's intent: the rule training data's intents follow.
            Example.from_json({"text": "-", "intent": label}, "label")
    except (ValueError, DataError) as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}") from None
    return label, discard


def _count_labels(found: dict[str, str], changes: dict[str, tuple[str | None, bool]]) -> None:
    for item, reason in found.items():
        label, discard = changes[item]
        if discard or label is not None:
            kind = "discarded" if discard else "oos" if label == OOS else "intent"
            labelled(REVIEW_LABELLED, reason, kind).inc()


@router.get("/v1/review", response_model=ReviewList, responses=ERRORS)
async def list_items(
    inbox: InboxDep,
    reason: Annotated[ReviewReason | None, Query(description="Only items kept for this reason.")] = None,
    intent: Annotated[str | None, Query(max_length=128, description="Only this top-ranked intent.")] = None,
    version: Annotated[str | None, Query(max_length=128, description="Only answers of this version.")] = None,
    status: Annotated[
        Status | None,
        Query(
            description="unlabelled, labelled (not yet trained on), used, discarded, or any; default: all"
            " but discarded."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=20, description="`next` of the previous page.")] = None,
) -> dict[str, Any]:
    """Items newest first, a page at a time."""
    if cursor is not None and not cursor.isdigit():
        raise ApiError(422, "invalid_request", "cursor: not a cursor this server gave")
    items, following = await _call(
        lambda: inbox.list(reason, intent, version, status, limit, int(cursor) if cursor else None)
    )
    return {"items": items, "next": following}


@router.get("/v1/review/stats", response_model=ReviewStats, responses=ERRORS)
async def stats(inbox: InboxDep) -> dict[str, Any]:
    """Counts by status and reason; live accuracy from the labelled random sample, with its 95% interval."""
    return await _call(inbox.stats)


@router.get(
    "/v1/review/export",
    response_class=Response,
    responses={
        **ERRORS,
        200: {
            "description": "The labelled items as training data",
            "content": {"text/csv": {}, "application/x-ndjson": {}, "application/yaml": {}},
        },
    },
)
async def export(
    inbox: InboxDep, format: Annotated[Literal["csv", "jsonl", "yaml"], Query()] = "csv"
) -> Response:
    """Labelled items (never discarded ones) as training data: CSV `text,intent`, JSON Lines, or Rasa
    NLU YAML; each is read by `intently train`."""
    items = await _call(inbox.labelled)
    rows = [(" ".join(i["text"].split()), i["label"]) for i in items]
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["text", "intent"])
        writer.writerows(rows)
        body, media = out.getvalue(), "text/csv; charset=utf-8"
    elif format == "jsonl":
        body = "".join(json.dumps({"text": t, "intent": i}, ensure_ascii=False) + "\n" for t, i in rows)
        media = "application/x-ndjson"
    else:
        body, media = _rasa_yaml(rows), "application/yaml"
    headers = {"Content-Disposition": f'attachment; filename="review.{format}"'}
    return Response(body.encode("utf-8"), media_type=media, headers=headers)


def _rasa_yaml(rows: list[tuple[str, str]]) -> str:
    """Rasa NLU YAML: each intent's examples as a block of `- text` lines (texts are one line)."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in rows:
        by_intent[intent].append(text)
    lines = ['version: "3.1"', "nlu:"]
    for intent in sorted(by_intent):
        lines += [f"- intent: {json.dumps(intent, ensure_ascii=False)}", "  examples: |"]
        lines += [f"    - {text}" for text in by_intent[intent]]
    return "\n".join(lines) + "\n"


@router.post("/v1/review/labels", response_model=ReviewBulkResult, responses=WITH_BODY)
async def label_many(body: ReviewBulk, inbox: InboxDep) -> dict[str, Any]:
    """Bulk label: each item its own label (or discard), all in one transaction."""
    changes = {c.id: _checked(c, f"items.{n}") for n, c in enumerate(body.items)}
    found = await _call(inbox.set_labels, [(i, label, discard) for i, (label, discard) in changes.items()])
    _count_labels(found, changes)
    return {"updated": len(found), "missing": [i for i in changes if i not in found]}


@router.put("/v1/review/{item_id}", response_model=ReviewItem, responses={**WITH_404, **WITH_BODY})
async def label_one(item_id: str, body: ReviewUpdate, inbox: InboxDep) -> dict[str, Any]:
    """Label an item (`{"label": INTENT_OR_oos}`) or set it aside (`{"discard": true}`)."""
    change = _checked(body)
    found = await _call(inbox.set_labels, [(item_id, *change)])
    if not found:
        raise ApiError(404, "not_found", f"no review item {item_id[:64]!r}")
    _count_labels(found, {item_id: change})
    try:
        return await _call(inbox.get, item_id)
    except KeyError:  # deleted in between
        raise ApiError(404, "not_found", f"no review item {item_id[:64]!r}") from None


@router.delete("/v1/review/{item_id}", response_model=ReviewDeleted, responses=WITH_404)
async def delete_one(item_id: str, inbox: InboxDep) -> dict[str, int]:
    """Delete one item."""
    if not await _call(inbox.delete, item_id):
        raise ApiError(404, "not_found", f"no review item {item_id[:64]!r}")
    return {"deleted": 1}


@router.delete("/v1/review", response_model=ReviewDeleted, responses=ERRORS)
async def delete_all(inbox: InboxDep) -> dict[str, int]:
    """Delete every item, labelled or not."""
    return {"deleted": await _call(inbox.clear)}
