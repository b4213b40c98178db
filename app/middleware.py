"""One pure-ASGI middleware per request: id, body size limit, worker header, metrics, one log line.

Pure ASGI rather than `BaseHTTPMiddleware`: it adds no task or stream per
request, which matters on the hottest path.
"""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import http_error_response
from app.metrics import LATENCY, REQUESTS, labelled

log = logging.getLogger("intently.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON = b"application/json"
_FORM = b"application/x-www-form-urlencoded"
WORKER_HEADER = b"x-intently-worker"


class BodyTooLarge(HTTPException):
    """An HTTPException so that FastAPI passes it on while reading a body (it turns others into 400)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than {limit} bytes")
        self.limit = limit


def _this_worker() -> bytes:
    return str(os.getpid()).encode()


_WORKER = _this_worker()


def _forked() -> None:
    global _WORKER
    _WORKER = _this_worker()


os.register_at_fork(after_in_child=_forked)  # a worker forked from an imported app names itself


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's first value: the one Starlette's `request.headers` reads."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value
    return None


def content_type(scope: Scope) -> bytes | None:
    """The media type a body is read as (lower case, parameters dropped), None without the header."""
    value = header(scope, b"content-type")
    return None if value is None else value.split(b";", 1)[0].strip().lower()


class RequestContext:
    def __init__(self, app: ASGIApp, max_body_bytes: int, larger_bodies: dict[str, int] | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.larger_bodies = larger_bodies or {}  # path -> limit, for uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        _read_as_json_by_default(scope)
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        answer = _Answer(send, request_id)
        limit = self.larger_bodies.get(scope.get("path", ""), self.max_body_bytes)
        try:
            if _declared_length(scope) > limit:
                await http_error_response(BodyTooLarge(limit))(scope, receive, answer.send)
            else:
                await self.app(scope, _limited(receive, limit), answer.send)
        finally:
            _record(scope, answer.status, time.perf_counter() - started, request_id)


def _read_as_json_by_default(scope: Scope) -> None:
    """`curl -d` and many chat back-ends send JSON untyped or as a form; no route here takes a form."""
    if content_type(scope) in (None, _FORM):
        others = [(key, value) for key, value in scope["headers"] if key != b"content-type"]
        scope["headers"] = [*others, (b"content-type", _JSON)]


def _request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a short safe token, else a new random one."""
    given = (header(scope, b"x-request-id") or b"").decode("latin-1")
    return given if _SAFE_ID.match(given) else os.urandom(16).hex()  # os.urandom: cheaper than uuid4


def _declared_length(scope: Scope) -> int:
    try:
        return int(header(scope, b"content-length") or 0)
    except ValueError:
        return 0


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising BodyTooLarge once the body passes `limit` (a streamed or understated body)."""
    received = 0

    async def receive_limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_limited


class _Answer:
    """The one place every response is finished (fast path or not): its status is kept, its headers added."""

    __slots__ = ("_headers", "_send", "status")

    def __init__(self, send: Send, request_id: str):
        self._send = send
        self._headers = [(b"x-request-id", request_id.encode()), (WORKER_HEADER, _WORKER)]
        self.status = 500  # what is logged when the app raises before it answers

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", []), *self._headers]
        await self._send(message)


def _record(scope: Scope, status: int, elapsed: float, request_id: str) -> None:
    """The request's metrics and its one access-log line."""
    route_path = getattr(scope.get("route"), "path", None) or "unmatched"
    method = scope.get("method", "")
    labelled(REQUESTS, method, route_path, str(status)).inc()
    labelled(LATENCY, method, route_path).observe(elapsed)
    log.info(
        "%s %s %d %.2fms",
        method,
        scope.get("path", ""),
        status,
        elapsed * 1000,
        extra={"request_id": request_id, "status": status, "route": route_path},
    )
