"""Every route an app answers, walked from the app itself (not from its OpenAPI schema, which a
route can leave): the home of the rules that hold for every route (tests/app/test_admin_token.py,
tests/app/test_api.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant


def app_routes(app: FastAPI) -> dict[tuple[str, str], Any]:
    """Every (method, path) the app answers, with what FastAPI knows of its route."""
    try:  # FastAPI 0.165 and later include routers lazily: their routes are not in app.routes
        from fastapi.routing import iter_route_contexts

        routes: Iterable[Any] = iter_route_contexts(app.routes)
    except ImportError:
        routes = app.routes
    found = {}
    for route in routes:
        for method in (getattr(route, "methods", None) or set()) - {"HEAD"}:
            found[(method, route.path)] = route
    return found


def wants(dependant: Dependant, call: Any) -> bool:
    """Does the route (or any dependency of it, however deep) depend on `call`?"""
    return any(d.call is call or wants(d, call) for d in dependant.dependencies)
