"""`POST /v1/classify` answered beneath FastAPI's routing, for well-formed requests.

Why: at concurrency 64 a worker's event loop spent about two thirds of its
time in the framework's generic per-request machinery (routing, dependency
solving, body parsing; py-spy in docs/BENCHMARKS.md), more than in the
project's own code and the model together. This layer parses the body with
the route's own pydantic model and answers with the route's own code
(`classify_one`). Anything it does not answer (another route, a body that is
not valid JSON or not a valid request, a blank text, no model loaded yet, a
client gone mid-body) goes to the FastAPI app unchanged, with the body
replayed, so every error keeps the status, message and OpenAPI description
of the route. A failure of the model itself is raised to the app's error
handler, as the route's would be.

It sits inside `RequestContext` (request id, size limit, metrics, access
log) and inside CORS, so those apply as to any request.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import Classifying
from app.errors import ApiError, error_body
from app.metrics import FAST_PATH
from app.middleware import BodyTooLarge
from app.routes import classify
from app.schemas import ClassifyRequest

PATH = "/v1/classify"
_JSON = b"application/json"


class ClassifyFastPath:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI):
        self.app = app
        self.fastapi_app = fastapi_app
        # What FastAPI puts in scope["route"]: metrics and the access log name the route by it.
        self.route = next(r for r in classify.router.routes if getattr(r, "path", None) == PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        try:
            body, last = await _read_body(receive)
        except BodyTooLarge as exc:  # as the route answers it (app/errors.py)
            scope["route"] = self.route
            await _send(send, 413, orjson.dumps(error_body("body_too_large", exc.detail)))
            return
        answer = await self._answer(scope, body) if last is None else None
        if answer is None:
            await self.app(scope, _replay(body, last, receive), send)
            return
        scope["route"] = self.route
        FAST_PATH.inc()
        await _send(send, 200, answer)

    async def _answer(self, scope: Scope, body: bytes) -> bytes | None:
        """The serialised answer, or None to let the FastAPI route handle the request.

        Failures of the model are raised, not handed on: the route would run the
        same batch again. The app's error handler answers them as for the route.
        """
        if not _is_json(scope):
            return None
        try:
            request = ClassifyRequest.model_validate_json(body)
        except ValidationError:
            return None
        state = self.fastapi_app.state
        predictor = state.holder.predictor
        if predictor is None:
            return None
        ctx = Classifying(predictor, state.batcher, state.settings)
        try:
            return await classify.classify_one(ctx, request.text, request.top_k)
        except ApiError:
            return None


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the `root_path` a proxy mounts the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _is_json(scope: Scope) -> bool:
    """`application/json` exactly (any parameters), read from the first Content-Type header.

    Only that: FastAPI also reads `+json` types as JSON, but those go the route's way.
    """
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == _JSON
    return False


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The body, and the message that cut it short (a disconnect) or None when complete."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, last: Message | None, receive: Receive) -> Receive:
    """A `receive` that gives what was read (and the disconnect, if one came), then the connection's own."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": last is not None}]
    if last is not None:
        pending.append(last)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _send(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
