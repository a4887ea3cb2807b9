"""Admin API: tenants and their API keys. Needs the admin key."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from service.api.deps import Admin, Services, Svc
from service.platform.db import Tenant
from service.protocol.admin import (
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    TenantLimitsObject,
    TenantLimitsUpdate,
    TenantObject,
)
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


@router.get("/tenants", response_model=ListResponse[TenantObject], summary="List tenants")
def list_tenants(services: Svc, _: Admin) -> ListResponse[TenantObject]:
    """Extension: every tenant (made with its first key), and whether it is disabled."""
    return ListResponse[TenantObject].page([services.keys.tenant_to_api(r) for r in services.keys.tenants()])


@router.post("/tenants/{tenant}/disable", response_model=TenantObject, summary="Disable a tenant")
def disable_tenant(tenant: str, services: Svc, _: Admin) -> TenantObject:
    """Extension. The tenant's keys are refused from now on (403 `tenant_disabled`), its open streams end,
    and its work stops: fine-tuning jobs are cancelled, evaluation runs canceled, ingestions cancelled. Its
    data stays (files, models, stores), for the admin to enable it again or to delete."""
    row = services.keys.set_disabled(tenant, True)
    services.jobs.cancel_all(tenant)
    services.evals.cancel_all_runs(tenant)
    services.vector_stores.cancel_all_ingestion(tenant)
    return services.keys.tenant_to_api(row)


@router.post("/tenants/{tenant}/enable", response_model=TenantObject, summary="Enable a disabled tenant")
def enable_tenant(tenant: str, services: Svc, _: Admin) -> TenantObject:
    """Extension. Its keys work again; stopped work stays stopped."""
    return services.keys.tenant_to_api(services.keys.set_disabled(tenant, False))


@router.get("/tenants/{tenant}/limits", response_model=TenantLimitsObject, summary="A tenant's limits")
def get_tenant_limits(tenant: str, services: Svc, _: Admin) -> TenantLimitsObject:
    """Extension: the limits that apply to the tenant, and which of them the admin set."""
    services.db.get_or_404(Tenant, tenant, "tenant")
    return _limits(tenant, services.quotas.overrides(tenant), services)


@router.post("/tenants/{tenant}/limits", response_model=TenantLimitsObject, summary="Set a tenant's limits")
def set_tenant_limits(tenant: str, body: TenantLimitsUpdate, services: Svc, _: Admin) -> TenantLimitsObject:
    """Extension: override some of the tenant's limits (rates within seconds, quotas at once); null sets
    one back to its default."""
    overrides = services.quotas.set_overrides(tenant, body.model_dump(exclude_unset=True))
    return _limits(tenant, overrides, services)


def _limits(tenant: str, overrides: dict[str, int], services: Services) -> TenantLimitsObject:
    return TenantLimitsObject(tenant=tenant, limits=asdict(services.quotas(tenant)), overrides=overrides)
