"""Every error leaves the API in OpenAI's shape, with the right status code."""

from __future__ import annotations

import logging
import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.platform.errors import ApiError, schema_error

log = logging.getLogger(__name__)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return ApiError(0, message, param=param, code=code, type=type).body()


def error_response(err: ApiError) -> JSONResponse:
    headers = {**err.headers, **({"WWW-Authenticate": "Bearer"} if err.status == 401 else {})}
    return JSONResponse(err.body(), err.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map ApiError, HTTP errors, schema errors and crashes to OpenAI's error envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Unknown route: {request.method} {request.url.path}"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
            headers["Allow"] = ", ".join(_allowed_methods(request))  # Starlette names one route's only
        err = ApiError(exc.status_code, message, code=_code_for(exc.status_code), headers=headers)
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def _schema_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_body_error(request, exc.errors()) or schema_error(exc.errors()))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text may hold SQL, paths or addresses: it goes to the log under an opaque id,
        # and the caller gets the id to quote.
        request_id = "req_" + secrets.token_hex(12)
        log.error("request %s %s %s failed", request_id, request.method, request.url.path, exc_info=exc)
        response = error_response(
            ApiError(
                500,
                f"The server had an error while processing your request (request id {request_id}).",
                type="server_error",
            )
        )
        response.headers["x-request-id"] = request_id
        return response


def _body_error(request: Request, errors: list) -> ApiError | None:
    """A body that is not a JSON object at all: pydantic's words for it ("Input should be a valid
    dictionary or object to extract fields from", "1: JSON decode error") name no field and no fix."""
    first = errors[0]
    if tuple(first.get("loc", ()))[:1] != ("body",) or len(first.get("loc", ())) > 2:
        return None
    kind = first.get("type")
    if kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "invalid JSON")
        where = first["loc"][1] if len(first["loc"]) == 2 else None
        at = f" at character {where}" if isinstance(where, int) else ""
        return ApiError(400, f"The request body is not valid JSON: {reason}{at}.", code="invalid_json")
    if kind == "missing" and len(first["loc"]) == 1:
        return ApiError(400, "The request body is missing: send a JSON object.", code="invalid_json")
    if kind in ("model_attributes_type", "dict_type") and len(first["loc"]) == 1:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return ApiError(
                400,
                f"The request body must be JSON sent with 'Content-Type: application/json' "
                f"(this request's is {content_type or 'missing'}).",
                code="invalid_json",
            )
        return ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return None


def _allowed_methods(request: Request) -> list[str]:
    """The methods of the path the request is routed to (FastAPI has a route per path and method, and
    Starlette names only the first one's)."""
    routes = request.app.router.routes
    matched = [r for r in routes if r.matches(request.scope)[0] != Match.NONE]
    if not matched:
        return []
    path = getattr(matched[0], "path", None)
    return sorted({m for r in routes if getattr(r, "path", None) == path for m in getattr(r, "methods", ())})


def _code_for(status: int) -> str | None:
    codes = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "request_too_large"}
    return codes.get(status)
