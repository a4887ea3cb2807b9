"""GET /health: no auth; the state of each component."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import HealthProbe, Services, Svc

router = APIRouter(tags=["health"])


@router.get("/health", summary="Health of each component (no auth)")
async def health(services: Svc) -> JSONResponse:
    """`status` is `ok` when every component is; the HTTP status is 503 otherwise."""
    probes: dict[str, HealthProbe] = {
        "db": lambda: _db(services),
        "object_store": lambda: _store(services),
        **services.probes,
    }
    results = await asyncio.gather(*(asyncio.to_thread(_run, p) for p in probes.values()))
    components = dict(zip(probes, results, strict=True))
    ok = all(c["status"] == "ok" for c in components.values())
    return JSONResponse({"status": "ok" if ok else "degraded", "components": components}, 200 if ok else 503)


def _run(probe: HealthProbe) -> dict:
    try:
        return {"status": "ok", "detail": probe()}
    except Exception as exc:  # a probe failing is the information we report
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}


def _db(services: Services) -> str:
    services.db.ping()
    return services.db.safe_url


def _store(services: Services) -> str:
    services.store.ping()
    return services.store.where
