"""Admin API: tenants' API keys. Needs the admin key."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import Admin, Svc
from service.protocol.admin import ApiKey, ApiKeyCreate, ApiKeyCreated
from service.protocol.common import ListResponse

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/api_keys", response_model=ApiKeyCreated, summary="Create a tenant API key")
def create_api_key(body: ApiKeyCreate, services: Svc, _: Admin) -> ApiKeyCreated:
    """Creates the tenant if it is new. The secret `key` is returned only here."""
    row, key = services.keys.create(body.tenant, body.name)
    return ApiKeyCreated(**services.keys.to_api(row).model_dump(), key=key)


@router.get("/api_keys", response_model=ListResponse[ApiKey], summary="List API keys")
def list_api_keys(services: Svc, _: Admin) -> ListResponse[ApiKey]:
    return ListResponse[ApiKey].page([services.keys.to_api(r) for r in services.keys.list()])


@router.delete("/api_keys/{key_id}", response_model=ApiKey, summary="Revoke an API key")
def revoke_api_key(key_id: str, services: Svc, _: Admin) -> ApiKey:
    return services.keys.to_api(services.keys.revoke(key_id))
