"""The web console at `/`: a small static app (console/) that signs in with an API key and uses the same
public HTTP API as every client; it holds no privileges of its own. Not part of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.platform.errors import ApiError

router = APIRouter(include_in_schema=False)

CONSOLE = Path(__file__).resolve().parent.parent / "console"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
# Only the console's own files, no inline script or style, no eval; the key never leaves for another origin.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/")
def console() -> FileResponse:
    return FileResponse(CONSOLE / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/console/{name}")
def console_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise ApiError(404, f"The console has no file '{name}'.", code="not_found")
    return FileResponse(CONSOLE / name, media_type=ASSETS[name], headers=HEADERS)
