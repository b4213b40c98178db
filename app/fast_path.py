"""`POST /v1/classify` answered beneath FastAPI's routing, for well-formed requests.

Why: under load the framework's generic per-request machinery (routing,
dependency solving, body parsing) costs a worker more than the project's own
code and the model together (docs/BENCHMARKS.md, section 4). This layer does
what FastAPI would do for this one route, with the route's own parts: its
body model, its one dependency and its endpoint.
Anything else (another route, a body that is not JSON or not a valid
request, any ApiError such as a blank text or no model loaded yet, a client
gone mid-body) goes to the FastAPI app unchanged, with the body replayed, so
every error keeps the status, message and OpenAPI description of the route.
A failure of the model itself is raised to the app's error handler, as the
route's would be.

Fenced: `unreplicated(app)` lists whatever the app would do for the route
that this layer does not (another dependency or parameter, a middleware
inside it, an exception handler it would bypass); while that list is not
empty the layer steps aside, and tests/app/test_fast_path.py fails.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import deps
from app.errors import ApiError, http_error_response
from app.metrics import FAST_PATH
from app.middleware import BodyTooLarge, RequestContext, content_type
from app.routes import classify
from app.schemas import ClassifyRequest
from store.model_store import StoreUnavailable

PATH = "/v1/classify"
_JSON = b"application/json"
log = logging.getLogger("intently.fast_path")

# What this layer stands in for, checked against the app by `unreplicated`.
DEPENDENCY = deps.classify_context
BODY = ClassifyRequest
ENDPOINT = classify.classify
# Around it (outermost first; CORS only when configured): they apply to it as to any route.
MIDDLEWARE_AROUND = (RequestContext, CORSMiddleware)
# Handlers of what it hands on or raises: ApiError and validation go to the route, the rest to Exception's.
# StoreUnavailable's is never needed here: classifying reads the model in memory, never the store.
EXCEPTION_HANDLERS = frozenset(
    {
        HTTPException,
        RequestValidationError,
        WebSocketRequestValidationError,
        ApiError,
        StoreUnavailable,
        Exception,
    }
)


class ClassifyFastPath:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI):
        # Built with the middleware stack, at the first request: routes and handlers are in place.
        self.app = app
        self.fastapi_app = fastapi_app
        route = _route(fastapi_app)
        # What FastAPI puts in scope["route"]: metrics and the access log name the route by it.
        self.route = getattr(route, "original_route", route)
        gaps = unreplicated(fastapi_app)
        self.enabled = not gaps
        if gaps:
            log.warning("classify fast path off, the route does more than it replicates: %s", "; ".join(gaps))
            return
        # The parameter names, as FastAPI passes them.
        self.body_name = route.dependant.body_params[0].name
        self.ctx_name = route.dependant.dependencies[0].name
        self.request_name = route.dependant.dependencies[0].request_param_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (self.enabled and scope["type"] == "http" and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        if _route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        try:
            body, last = await _read_body(receive)
        except BodyTooLarge as exc:
            scope["route"] = self.route
            await http_error_response(exc)(scope, receive, send)
            return
        response = await self._answer(scope, body) if last is None else None
        if response is None:
            await self.app(scope, _replay(body, last, receive), send)
            return
        scope["route"] = self.route
        FAST_PATH.inc()
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, body: bytes) -> Response | None:
        """The route's response, or None to let the FastAPI route handle the request.

        Failures of the model are raised, not handed on: the route would run the
        same batch again. The app's error handler answers them as for the route.
        """
        if content_type(scope) != _JSON:  # FastAPI also reads `+json` types: those go the route's way
            return None
        try:
            request = BODY.model_validate_json(body)
        except ValidationError:
            return None
        try:
            # By the names the route gives its parameters, so a rename there cannot misroute them.
            ctx = await DEPENDENCY(**{self.request_name: Request(scope)})
            return await ENDPOINT(**{self.body_name: request, self.ctx_name: ctx})  # type: ignore[arg-type]
        except ApiError:
            return None


def unreplicated(app: FastAPI) -> list[str]:
    """What the app does for `POST /v1/classify` that the fast path would skip; empty when it may run."""
    route = _route(app)
    if route is None:
        return [f"no POST {PATH} route"]
    gaps = []
    if route.endpoint is not ENDPOINT:
        gaps.append(f"endpoint {route.endpoint!r}")
    calls = [sub.call for sub in _sub_dependants(route.dependant)]
    if calls != [DEPENDENCY]:
        gaps.append(f"dependencies {calls!r}")
    elif not route.dependant.dependencies[0].request_param_name:
        gaps.append("a dependency that does not take the Request")
    params = [p for d in (route.dependant, *_sub_dependants(route.dependant)) for p in _params(d)]
    if params:
        gaps.append(f"parameters {params!r}")
    bodies = [f.field_info.annotation for f in route.dependant.body_params]
    if bodies != [BODY]:
        gaps.append(f"body {bodies!r}")
    stack: list[object] = [m.cls for m in app.user_middleware]
    if stack[-1:] != [ClassifyFastPath] or not set(stack[:-1]) <= set(MIDDLEWARE_AROUND):
        gaps.append(f"middleware {stack!r}")
    if getattr(route, "max_body_size", None) is not None:
        gaps.append(f"max_body_size {route.max_body_size}")
    handlers = set(app.exception_handlers) - EXCEPTION_HANDLERS
    if handlers:
        gaps.append(f"exception handlers {sorted(map(repr, handlers))}")
    return gaps


def _route(app: FastAPI) -> Any:
    """The route as the app runs it (with the dependencies its routers add), or None."""
    try:  # FastAPI from 0.150 on keeps included routers whole and resolves their routes lazily
        from fastapi.routing import iter_route_contexts

        routes: Iterable[Any] = iter_route_contexts(app.router.routes)
    except ImportError:
        routes = app.router.routes
    for route in routes:
        if getattr(route, "path", None) == PATH and "POST" in (getattr(route, "methods", None) or ()):
            return route
    return None


def _sub_dependants(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _sub_dependants(sub)


def _params(dependant: Dependant) -> list[str]:
    """Its parameters other than the body and the request: none that the fast path would fill in."""
    d = dependant
    fields = [f.name for f in (*d.path_params, *d.query_params, *d.header_params, *d.cookie_params)]
    special = (
        d.websocket_param_name,
        d.http_connection_param_name,
        d.response_param_name,
        d.background_tasks_param_name,
        d.security_scopes_param_name,
    )
    return fields + [name for name in special if name]


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the `root_path` a proxy mounts the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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
