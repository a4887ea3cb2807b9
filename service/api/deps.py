"""FastAPI dependencies: the services the composition root built, and the calling principal."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from service.api.metrics import ApiMetrics
from service.batches.service import BatchService
from service.evals.runs import EvalRunner
from service.evals.service import EvalService
from service.files.service import FileService
from service.fine_tuning.launcher import Launcher
from service.fine_tuning.service import JobService
from service.inference.chat import ChatService
from service.inference.embeddings import EmbeddingService
from service.inference.responses import ResponsesService
from service.inference.stored_completions import StoredCompletions
from service.models.registry import ModelRegistry
from service.platform.auth import KeyStore, Principal, authenticate_header
from service.platform.db import Database
from service.platform.errors import ApiError
from service.platform.limits import TenantLimits
from service.platform.quotas import LimitPolicy
from service.platform.settings import Settings
from service.platform.storage import ObjectStore
from service.vector_stores.service import VectorStores

# A health probe returns a short status detail, or raises to say the component is down. A coroutine function
# is awaited on the API's event loop (a Serve handle must be: the replica's loop may run its router); any
# other probe runs in a thread.
HealthProbe = Callable[[], str] | Callable[[], Awaitable[str]]


@dataclass
class Services:
    """Everything a route may call, built once by `service.api.app.create_app`."""

    settings: Settings
    db: Database
    store: ObjectStore
    keys: KeyStore
    files: FileService
    models: ModelRegistry
    vector_stores: VectorStores
    chat: ChatService
    responses: ResponsesService
    completions: StoredCompletions
    batches: BatchService
    embeddings: EmbeddingService
    evals: EvalService
    eval_runs: EvalRunner
    jobs: JobService
    limits: TenantLimits
    quotas: LimitPolicy
    metrics: ApiMetrics
    # Runs training jobs; None where nothing may train (unit tests).
    launcher: Launcher | None = None
    # Components only the runtime knows (Ray, serving, the scheduler): name -> probe.
    probes: dict[str, HealthProbe] = field(default_factory=dict)


# The dependencies are coroutines: FastAPI runs a plain function dependency in its thread pool, a thread
# hop per dependency and request that wakes a thread on the engine's cores for an attribute read.
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_principal(request: Request, services: Annotated[Services, Depends(get_services)]) -> Principal:
    """The caller, as `guard.RequestGuard` authenticated it before the body was read (or now, in a thread,
    for an app without the guard)."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        header = request.headers.get("authorization", "")
        principal = await run_in_threadpool(authenticate_header, services.keys, header)
    return principal


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "This operation needs the admin API key.", code="admin_required")
    return principal


Svc = Annotated[Services, Depends(get_services)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
