"""The playground page at `/`: static HTML, CSS and JavaScript from `app/static/`, no build step.

Every page response carries a strict Content-Security-Policy: scripts,
styles, images and requests from this server only; no inline script or
style; never framed. The page uses only the documented API.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Response

from app.errors import ApiError

STATIC = Path(__file__).resolve().parents[1] / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Small files that change with a release: revalidate rather than serve a stale page.
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["playground"])


@lru_cache(maxsize=32)
def _read(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def _file(name: str) -> Response:
    # Only plain names of files that exist, with a known type: no paths from the client.
    suffix = Path(name).suffix
    if "/" in name or name.startswith(".") or suffix not in _TYPES or not (STATIC / name).is_file():
        raise ApiError(404, "not_found", f"no static file {name[:64]!r}")
    return Response(_read(name), media_type=_TYPES[suffix], headers=SECURITY_HEADERS)


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The playground: try utterances, browse intents and evaluations, and (with the token) retrain."""
    return _file("index.html")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    return _file(name)
