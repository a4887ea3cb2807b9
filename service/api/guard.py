"""`RequestGuard`: in front of every /v1 route, the caller's key is checked before a byte of the body is
read, and bodies are bounded while they stream in (413), so that an anonymous caller cannot make the API
read and parse a 300 MB body, and nobody can make it hold more than the limit. A body that stops coming
for longer than the body timeout is a 408: a stalled client cannot hold a request open for ever.

A pure ASGI middleware (Starlette's BaseHTTPMiddleware would buffer streamed responses). The principal it
authenticated rides on the request's state, where `deps.get_principal` picks it up.
"""

from __future__ import annotations

import asyncio

from anyio import to_thread
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.platform.auth import authenticate_header
from service.platform.errors import ApiError

MULTIPART_OVERHEAD = 1024 * 1024  # boundaries and part headers around an upload's bytes


class RequestGuard:
    def __init__(
        self, app: ASGIApp, max_request_bytes: int, max_upload_bytes: int, body_timeout_s: float
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        keys = scope["app"].state.services.keys
        try:
            principal = await to_thread.run_sync(authenticate_header, keys, headers.get("authorization", ""))
        except ApiError as err:
            await error_response(err)(scope, receive, send)
            return
        if not principal.may_call(scope["path"]):
            message = "This key belongs to an evaluation run: it may only ask for completions and embeddings."
            await error_response(ApiError(403, message, code="key_scope"))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        upload = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.max_upload_bytes + MULTIPART_OVERHEAD if upload else self.max_request_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await error_response(_too_large(limit, upload))(scope, receive, send)
            return
        await self.app(scope, _bounded(receive, limit, upload, self.body_timeout_s), send)


def _bounded(receive: Receive, limit: int, upload: bool, timeout_s: float) -> Receive:
    """`receive` that stops a body (chunked, or longer than it declared) once it passes `limit`, or once
    its next part has not come for `timeout_s`. After the body, `receive` waits for the client to leave
    (a stream's disconnect) as long as it takes."""
    seen = 0
    body_done = False

    async def bounded() -> Message:
        nonlocal seen, body_done
        if body_done:
            return await receive()
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except TimeoutError:
            what = "upload" if upload else "request"
            setting = "TUNESERVE_REQUEST_BODY_TIMEOUT_S"
            message = f"The {what}'s body stopped coming for {timeout_s:g} s ({setting})."
            raise HTTPException(408, message) from None  # as 413: FastAPI lets it out of body parsing
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                err = _too_large(limit, upload)
                raise HTTPException(413, err.message)
            body_done = not message.get("more_body", False)
        return message

    return bounded


def _too_large(limit: int, upload: bool) -> ApiError:
    what, setting = (
        ("upload", "TUNESERVE_MAX_FILE_BYTES") if upload else ("request", "TUNESERVE_MAX_REQUEST_BYTES")
    )
    size = limit - MULTIPART_OVERHEAD if upload else limit
    return ApiError(413, f"The {what} is larger than {size} bytes ({setting}).", code="request_too_large")
