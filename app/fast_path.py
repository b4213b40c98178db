"""`POST /v1/classify` answered beneath FastAPI's routing, for well-formed requests.

Why: at concurrency 64 a worker's event loop spent about two thirds of its
time in the framework's generic per-request machinery (routing, dependency
solving, body parsing; py-spy in docs/BENCHMARKS.md), more than in the
project's own code and the model together. This layer parses the body with
the route's own pydantic model and answers with the route's own code
(`classify_one`). Anything it does not answer (another route, a body that is
not valid JSON or not a valid request, a blank text, no model loaded yet, a
failure) goes to the FastAPI app unchanged, with the body replayed, so every
error keeps the status, message and OpenAPI description of the route.

It sits inside `RequestContext` (request id, size limit, metrics, access
log) and inside CORS, so those apply as to any request.
"""

from __future__ import annotations

import logging

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

log = logging.getLogger("intently.fast_path")
PATH = "/v1/classify"
_JSON = b"application/json"


class ClassifyFastPath:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI):
        self.app = app
        self.fastapi_app = fastapi_app
        # What FastAPI puts in scope["route"]: metrics and the access log name the route by it.
        self.route = next(r for r in classify.router.routes if getattr(r, "path", None) == PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except BodyTooLarge as exc:
            await _send(send, 413, orjson.dumps(error_body("body_too_large", str(exc))))
            return
        if body is None:  # the client went away
            return
        answer = await self._answer(scope, body)
        if answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self.route
        FAST_PATH.inc()
        await _send(send, 200, answer)

    async def _answer(self, scope: Scope, body: bytes) -> bytes | None:
        """The serialised answer, or None to let the FastAPI route handle the request."""
        content_type = dict(scope["headers"]).get(b"content-type", b"")
        if not content_type.startswith(_JSON):
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
        except Exception:  # the route runs it again and answers the failure the usual way
            log.exception("fast path failed; handing the request to the route")
            return None


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the connection says next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
