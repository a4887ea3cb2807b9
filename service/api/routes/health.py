"""GET /health: a liveness probe for anyone; the state of each component for the admin key."""

from __future__ import annotations

import asyncio
import inspect

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import HealthProbe, Services, Svc, get_principal
from service.platform.errors import ApiError
from service.protocol.admin import Health

router = APIRouter(tags=["health"])
PROBE_TIMEOUT_S = 10.0


@router.get(
    "/health",
    summary="Liveness (no auth); each component's health (admin key)",
    response_model=Health,
    responses={503: {"model": Health, "description": "A component is down (`status`: `degraded`)"}},
)
async def health(request: Request, services: Svc) -> JSONResponse:
    """`status` is `ok` when every component is; the HTTP status is 503 otherwise. Only a request with the
    admin key also gets `components` (each one's status and detail: addresses, sizes, load), which are
    nobody else's business."""
    probes: dict[str, HealthProbe] = {
        "db": lambda: _db(services),
        "object_store": lambda: _store(services),
        **services.probes,
    }
    results = await asyncio.gather(*(_run(p) for p in probes.values()))
    components = dict(zip(probes, results, strict=True))
    ok = all(c["status"] == "ok" for c in components.values())
    body: dict = {"status": "ok" if ok else "degraded"}
    if await _is_admin(request, services):
        body["components"] = components
    return JSONResponse(body, 200 if ok else 503)


async def _is_admin(request: Request, services: Services) -> bool:
    if "authorization" not in request.headers:
        return False
    try:
        return (await get_principal(request, services)).is_admin
    except ApiError:
        return False


async def _run(probe: HealthProbe) -> dict:
    try:
        if inspect.iscoroutinefunction(probe):
            detail = await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
        else:
            detail = await asyncio.to_thread(probe)
        return {"status": "ok", "detail": detail}
    except TimeoutError:
        return {"status": "error", "detail": f"no answer in {PROBE_TIMEOUT_S:g} s"}
    except Exception as exc:  # a probe failing is the information we report
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}


def _db(services: Services) -> str:
    services.db.ping()
    return services.db.safe_url


def _store(services: Services) -> str:
    services.store.ping()
    return services.store.where
