"""FastAPI dependencies: the app context and the calling principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.auth import Principal
from service.context import AppContext
from service.errors import ApiError


def get_context(request: Request) -> AppContext:
    return request.app.state.context


def get_principal(request: Request, ctx: Annotated[AppContext, Depends(get_context)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key"
        )
    principal = ctx.keys.authenticate(token.strip())
    if principal is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return principal


def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "This operation needs the admin API key.", code="admin_required")
    return principal


Context = Annotated[AppContext, Depends(get_context)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
