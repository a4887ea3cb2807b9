"""GET /health: no auth; the state of each component."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.context import AppContext, HealthProbe
from service.deps import Context

router = APIRouter(tags=["health"])


@router.get("/health", summary="Health of each component (no auth)")
async def health(ctx: Context) -> JSONResponse:
    """`status` is `ok` when every component is; the HTTP status is 503 otherwise."""
    probes: dict[str, HealthProbe] = {
        "db": lambda: _db(ctx),
        "object_store": lambda: _store(ctx),
        **ctx.probes,
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


def _db(ctx: AppContext) -> str:
    ctx.db.ping()
    return ctx.db.safe_url


def _store(ctx: AppContext) -> str:
    ctx.store.ping()
    return ctx.store.where
