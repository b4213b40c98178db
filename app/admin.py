"""Admin access: a bearer token compared in constant time; off unless a token is configured."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.errors import ApiError
from store.model_store import ModelStore

_bearer = HTTPBearer(auto_error=False, description="INTENTLY_ADMIN_TOKEN")


def admin_token(settings: Settings) -> str | None:
    """The configured token, or None when the admin API is off.

    An empty value (e.g. `INTENTLY_ADMIN_TOKEN=` from a template) must not
    open the admin API to a request without a token: it means off.
    """
    token = settings.admin_token
    return token.get_secret_value() or None if token is not None else None


async def require_admin(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    token = admin_token(request.app.state.settings)
    if token is None:
        raise ApiError(
            403, "admin_disabled", "the admin API is off; set INTENTLY_ADMIN_TOKEN on the server to enable it"
        )
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})


async def _store(request: Request) -> ModelStore:
    store: ModelStore | None = request.app.state.holder.store
    if store is None:
        raise ApiError(
            409,
            "no_model_store",
            "this server serves a fixed model directory; start it with a model store "
            "(no --model) to manage versions and training jobs",
        )
    return store


AdminDep = Depends(require_admin)
StoreDep = Annotated[ModelStore, Depends(_store)]


async def utterance_access(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> bool:
    """May this caller read training utterances? Open with INTENTLY_PUBLIC_EXAMPLES, else admin only.

    Training data may hold real users' words, so by default only the admin
    sees it; a token that is sent must be right (401 otherwise), never ignored.
    """
    if credentials is not None:
        await require_admin(request, credentials)
        return True
    return bool(request.app.state.settings.public_examples)


UtteranceAccessDep = Annotated[bool, Depends(utterance_access)]
