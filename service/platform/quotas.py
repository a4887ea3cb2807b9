"""Per-tenant limits: the settings' defaults, and the admin's overrides for a tenant (`PUT
/v1/admin/tenants/{tenant}/limits`). Quotas on what a tenant keeps or runs at once (stored bytes, vector
stores, evaluation runs and batches in flight, running jobs) are checked where those are made
(`check_quota`); rates (requests and tokens per minute, open streams) by `platform.limits`. Over one, a 429
in OpenAI's shape that names the limit, what is used, and what raises it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from service.platform.db import Database, Tenant
from service.platform.errors import ApiError
from service.platform.limits import Rates
from service.platform.settings import Settings

CACHE_S = 2.0  # an override reaches the serving path within this


@dataclass(frozen=True)
class Limits:
    """One tenant's limits (0: none, where a limit allows it)."""

    requests_per_minute: int
    tokens_per_minute: int
    concurrent_streams: int
    storage_bytes: int
    vector_stores: int
    active_eval_runs: int
    running_jobs: int
    active_batches: int

    @classmethod
    def defaults(cls, s: Settings) -> Limits:
        return cls(
            requests_per_minute=s.rate_limit_requests_per_minute,
            tokens_per_minute=s.rate_limit_tokens_per_minute,
            concurrent_streams=s.max_concurrent_streams_per_tenant,
            storage_bytes=s.max_storage_bytes_per_tenant,
            vector_stores=s.max_vector_stores_per_tenant,
            active_eval_runs=s.max_active_eval_runs_per_tenant,
            running_jobs=s.max_running_jobs_per_tenant,
            active_batches=s.max_active_batches_per_tenant,
        )

    def rates(self) -> Rates:
        return Rates(self.requests_per_minute, self.tokens_per_minute, self.concurrent_streams)


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


class LimitPolicy:
    """Each tenant's limits: its overrides (a JSON column of its row) over the defaults; cached briefly,
    as the serving path asks on every request."""

    def __init__(
        self, defaults: Limits, db: Database | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.defaults = defaults
        self.db = db
        self.clock = clock
        self._cache: dict[str, tuple[float, Limits]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, settings: Settings, db: Database | None = None) -> LimitPolicy:
        """The settings' defaults, with each tenant's overrides from `db` (none without one)."""
        return cls(Limits.defaults(settings), db)

    def __call__(self, tenant: str) -> Limits:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        limits = replace(self.defaults, **self.overrides(tenant))
        with self._lock:
            self._cache[tenant] = (now, limits)
        return limits

    def overrides(self, tenant: str) -> dict[str, int]:
        if self.db is None:
            return {}
        with self.db.session() as s:
            row = s.get(Tenant, tenant)
            return {k: v for k, v in ((row.limits or {}) if row else {}).items() if k in LIMIT_NAMES}

    def set_overrides(self, tenant: str, changes: dict[str, int | None]) -> dict[str, int]:
        """Apply `changes` to the tenant's overrides (None: back to the default); its overrides now."""
        assert self.db is not None
        self.db.get_or_404(Tenant, tenant, "tenant")
        with self.db.session() as s:
            row = s.get(Tenant, tenant)
            merged = {**(row.limits or {}), **changes}
            row.limits = {k: v for k, v in merged.items() if v is not None} or None
            result = dict(row.limits or {})
        with self._lock:
            self._cache.pop(tenant, None)
        return result


def check_quota(
    what: str, used: int, adding: int, limit: int, setting: str, retry_after_s: int | None = None
) -> None:
    """Raise the 429 of quota `what` if `used + adding` is over `limit` (0: unlimited). `setting` names
    the default that raises it; `retry_after_s`: for a quota that frees itself (work in flight), when to
    try again."""
    if limit <= 0 or used + adding <= limit:
        return
    message = (
        f"Quota reached: {what} — {used} used of {limit} for your organization"
        + (f", and this needs {adding} more" if adding > 1 else "")
        + f". Free some up, or ask the admin to raise it ({setting}, or the tenant's limits)."
    )
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else {}
    raise ApiError(429, message, code="quota_exceeded", headers=headers)
