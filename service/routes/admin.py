"""Admin API: tenants' API keys. Needs the admin key."""

from __future__ import annotations

from fastapi import APIRouter

from service.db import ApiKeyRow
from service.deps import Admin, Context
from service.errors import ApiError
from service.protocol.admin import ApiKey, ApiKeyCreate, ApiKeyCreated
from service.protocol.common import ListResponse

router = APIRouter(prefix="/v1/admin", tags=["admin"])


def _to_api(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


@router.post("/api_keys", response_model=ApiKeyCreated, summary="Create a tenant API key")
def create_api_key(body: ApiKeyCreate, ctx: Context, _: Admin) -> ApiKeyCreated:
    """Creates the tenant if it is new. The secret `key` is returned only here."""
    row, key = ctx.keys.create(body.tenant, body.name)
    return ApiKeyCreated(**_to_api(row).model_dump(), key=key)


@router.get("/api_keys", response_model=ListResponse[ApiKey], summary="List API keys")
def list_api_keys(ctx: Context, _: Admin) -> ListResponse[ApiKey]:
    return ListResponse[ApiKey].page([_to_api(r) for r in ctx.keys.list()])


@router.delete("/api_keys/{key_id}", response_model=ApiKey, summary="Revoke an API key")
def revoke_api_key(key_id: str, ctx: Context, _: Admin) -> ApiKey:
    row = ctx.keys.revoke(key_id)
    if row is None:
        raise ApiError(404, f"No API key with id '{key_id}'", param="key_id", code="not_found")
    return _to_api(row)
