"""Schemas of the admin API (tenants and their API keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Names of the keys the service makes for its evaluation runs (inference only; revoked when the run ends).
EVAL_RUN_KEY_NAME = "eval-run:"


class ApiKeyCreate(BaseModel):
    tenant: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Tenant the key belongs to; created if it does not exist.",
    )
    name: str | None = Field(None, max_length=128, description="A label for the key.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str | None) -> str | None:
        if name is not None and name.startswith(EVAL_RUN_KEY_NAME):
            raise ValueError(f"names starting with '{EVAL_RUN_KEY_NAME}' are the service's own")
        return name


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


class TenantLimitsUpdate(BaseModel):
    """The admin's overrides of a tenant's limits; a field left out stays as it is, null goes back to the
    default (the TUNESERVE_* setting). 0 means no limit where the setting allows it."""

    model_config = ConfigDict(extra="forbid")
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=0)
    concurrent_streams: int | None = Field(None, ge=1)
    storage_bytes: int | None = Field(None, ge=0)
    vector_stores: int | None = Field(None, ge=0)
    active_eval_runs: int | None = Field(None, ge=0)
    running_jobs: int | None = Field(None, ge=1)
    active_batches: int | None = Field(None, ge=0)


class TenantLimitsObject(BaseModel):
    object: Literal["tenant.limits"] = "tenant.limits"
    tenant: str
    limits: dict[str, int] = Field(description="What applies to the tenant now.")
    overrides: dict[str, int] = Field(description="Those set by the admin (the rest are the defaults).")
