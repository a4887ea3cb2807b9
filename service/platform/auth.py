"""API keys -> tenants. Every /v1 route needs `Authorization: Bearer <key>`.

The admin key (TUNESERVE_API_KEY, else DATA_DIR/api_key) belongs to the tenant `default` and may manage
other tenants' keys; tenant keys live hashed in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from service.platform.db import ApiKeyRow, Database, Tenant
from service.platform.db.models import now
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.secret_files import write_secret
from service.platform.settings import Settings
from service.protocol.admin import EVAL_RUN_KEY_NAME, ApiKey, TenantObject

ADMIN_TENANT = "default"
KEY_PREFIX = "ts-"
# Keys the service makes for its own evaluation runs (named EVAL_RUN_KEY_NAME...) may only ask for answers.
INFERENCE_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant that owns what they create, and whether they may administer."""

    tenant: str
    is_admin: bool = False
    key_id: str | None = None
    inference_only: bool = False  # a key of an evaluation run: INFERENCE_ROUTES only

    def may_call(self, path: str) -> bool:
        return not self.inference_only or path in INFERENCE_ROUTES


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_hex(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def admin_key_file(settings: Settings) -> Path:
    return settings.resolved_data_dir / "api_key"


def resolve_admin_key(settings: Settings, *, create: bool = False) -> str:
    """The admin key: TUNESERVE_API_KEY, else the one in DATA_DIR/api_key (generated once if `create`)."""
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = admin_key_file(settings)
    if path.exists():
        return path.read_text().strip()
    if not create:
        raise FileNotFoundError(
            f"no admin API key: set TUNESERVE_API_KEY or run `tuneserve up` to create {path}"
        )
    key = generate_key()
    write_secret(path, key + "\n")
    return key


class KeyStore:
    """Authentication and key management over the database."""

    def __init__(self, db: Database, admin_key: str) -> None:
        self.db = db
        self._admin_hash = hash_key(admin_key)

    def authenticate(self, presented: str) -> Principal | None:
        digest = hash_key(presented)
        if hmac.compare_digest(digest, self._admin_hash):
            return Principal(ADMIN_TENANT, is_admin=True)
        with self.db.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
            if row is None or row.revoked_at is not None:
                return None
            if s.get(Tenant, row.tenant_id).disabled_at is not None:
                raise ApiError(
                    403,
                    f"Your organization ('{row.tenant_id}') is disabled; ask the service's admin.",
                    code="tenant_disabled",
                )
            scoped = (row.name or "").startswith(EVAL_RUN_KEY_NAME)
            return Principal(row.tenant_id, is_admin=False, key_id=row.id, inference_only=scoped)

    def still_valid(self, principal: Principal) -> bool:
        """Whether the key `principal` authenticated with is still valid (a revoked key's work ends)."""
        return self.key_valid(principal.key_id)

    def key_valid(self, key_id: str | None) -> bool:
        """Whether tenant key `key_id` is neither revoked nor of a disabled tenant (None: the admin key,
        which changes only with the configuration)."""
        if key_id is None:
            return True
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            return (
                row is not None
                and row.revoked_at is None
                and s.get(Tenant, row.tenant_id).disabled_at is None
            )

    def set_disabled(self, tenant: str, disabled: bool) -> Tenant:
        """Disable a tenant (its keys are refused from now on) or enable it again; 400 for the admin's own."""
        if tenant == ADMIN_TENANT:
            raise ApiError(
                400, "The admin's tenant cannot be disabled.", param="tenant", code="invalid_value"
            )
        self.db.get_or_404(Tenant, tenant, "tenant")
        with self.db.session() as s:
            row = s.get(Tenant, tenant)
            row.disabled_at = (row.disabled_at or now()) if disabled else None
            return row

    def create(self, tenant: str, name: str | None = None) -> tuple[ApiKeyRow, str]:
        """Create a key for `tenant` (creating the tenant if new); returns the row and the secret."""
        key = generate_key()
        with self.db.session() as s:
            if s.get(Tenant, tenant) is None:
                s.add(Tenant(id=tenant))
                s.flush()
            row = ApiKeyRow(
                id=new_id("key-"),
                tenant_id=tenant,
                key_hash=hash_key(key),
                prefix=key[: len(KEY_PREFIX) + 6],
                name=name,
            )
            s.add(row)
        return row, key

    def list(self) -> list[ApiKeyRow]:
        return self.db.page(select(ApiKeyRow))[0]

    def tenants(self) -> list[Tenant]:
        return self.db.page(select(Tenant))[0]

    def revoke(self, key_id: str) -> ApiKeyRow:
        self.db.get_or_404(ApiKeyRow, key_id, "key_id")
        with self.db.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row.revoked_at is None:
                row.revoked_at = now()
            return row

    @staticmethod
    def tenant_to_api(row: Tenant) -> TenantObject:
        return TenantObject(id=row.id, created_at=row.created_at, disabled_at=row.disabled_at)

    @staticmethod
    def to_api(row: ApiKeyRow) -> ApiKey:
        return ApiKey(
            id=row.id,
            tenant=row.tenant_id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


def ensure_admin_tenant(db: Database) -> None:
    with db.session() as s:
        if s.get(Tenant, ADMIN_TENANT) is None:
            s.add(Tenant(id=ADMIN_TENANT))


def authenticate_header(keys: KeyStore, header: str) -> Principal:
    """The principal of an `Authorization: Bearer <key>` header, or a 401 that says what is wrong."""
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "Malformed Authorization header: expected 'Bearer <key>'.", code="invalid_api_key"
        )
    principal = keys.authenticate(token.strip())
    if principal is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    return principal
