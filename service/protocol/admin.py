"""Schemas of the admin API (tenants and their API keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ApiKeyCreate(BaseModel):
    tenant: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Tenant the key belongs to; created if it does not exist.",
    )
    name: str | None = Field(None, max_length=128, description="A label for the key.")


class ApiKey(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    tenant: str
    name: str | None
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: int
    revoked_at: int | None = None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret key. Shown once; only its hash is stored.")


class ComponentHealth(BaseModel):
    status: Literal["ok", "error"]
    detail: str | None = None


class Health(BaseModel):
    """`GET /health`: `components` only for the admin key."""

    status: Literal["ok", "degraded"]
    components: dict[str, ComponentHealth] | None = None


class TenantObject(BaseModel):
    object: Literal["tenant"] = "tenant"
    id: str
    created_at: int
    disabled_at: int | None = Field(None, description="When the admin disabled it; null while it is enabled.")
