"""Admin: the versions of the model store, activation and rollback."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from app.admin import AdminDep, StoreDep
from app.deps import HolderDep
from app.errors import ApiError, unavailable
from app.schemas import ActiveResponse, ErrorResponse, VersionList
from store.model_store import StoreError, StoreUnavailable, VersionNotFound

router = APIRouter(tags=["admin: models"], dependencies=[AdminDep])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse, "description": "Invalid version id"},
    503: {"model": ErrorResponse, "description": "The store's database is unreachable; retry"},
}


def _store_error(exc: StoreError) -> ApiError:
    if isinstance(exc, StoreUnavailable):
        return unavailable(exc)
    if isinstance(exc, VersionNotFound):
        return ApiError(404, "not_found", str(exc))
    if "invalid version id" in str(exc):
        return ApiError(422, "invalid_request", str(exc))
    return ApiError(409, "conflict", str(exc))


@router.get("/v1/models", response_model=VersionList, responses=_ERRORS)
async def list_versions(store: StoreDep) -> dict[str, Any]:
    """Every version in the store, oldest first, and which one is active."""
    versions = await asyncio.to_thread(store.list)
    return {"active": await asyncio.to_thread(store.active), "versions": [asdict(v) for v in versions]}


@router.post("/v1/models/{version}/activate", response_model=ActiveResponse, responses=_ERRORS)
async def activate(version: str, store: StoreDep, holder: HolderDep) -> dict[str, Any]:
    """Make `version` active; every worker and replica switches within seconds. A damaged one is refused."""
    try:
        await asyncio.to_thread(store.activate, version)
    except StoreError as exc:
        raise _store_error(exc) from None
    await holder.check_store()
    return {"active": version}


@router.post("/v1/models/rollback", response_model=ActiveResponse, responses=_ERRORS)
async def rollback(store: StoreDep, holder: HolderDep) -> dict[str, Any]:
    """Re-activate the version that was active before the current one."""
    try:
        version = await asyncio.to_thread(store.rollback)
    except StoreError as exc:
        raise _store_error(exc) from None
    await holder.check_store()
    return {"active": version}


@router.delete("/v1/models/{version}", responses=_ERRORS)
async def delete(version: str, store: StoreDep) -> dict[str, Any]:
    """Delete a version and its data; the active version cannot be deleted."""
    try:
        await asyncio.to_thread(store.delete, version)
    except StoreError as exc:
        raise _store_error(exc) from None
    return {"deleted": version}
