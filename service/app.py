"""create_app(settings) -> the FastAPI application; Ray Serve mounts it as the ingress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.auth import KeyStore, ensure_admin_tenant, resolve_admin_key
from service.context import AppContext, HealthProbe
from service.db import Database
from service.errors import install_error_handlers
from service.eval_runs import EvalRunner
from service.inference import InferenceEngine
from service.jobs.launcher import Launcher
from service.jobs.scheduler import JobScheduler
from service.jobs.store import JobStore
from service.routes import admin, chat, evals, files, fine_tuning, health, models, vector_stores
from service.settings import Settings
from service.storage import ObjectStore, store_credentials
from service.tasks import TaskRunner, ThreadRunner
from service.vector_stores import VectorStores

DESCRIPTION = """Self-hosted, OpenAI-compatible fine-tuning and serving.

Every `/v1` route needs `Authorization: Bearer <key>`. Errors use OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}`.
"""


def create_app(
    settings: Settings,
    probes: dict[str, HealthProbe] | None = None,
    launcher: Launcher | None = None,
    engine: InferenceEngine | None = None,
    tasks: TaskRunner | None = None,
) -> FastAPI:
    """Build the API for a stack whose object store endpoint is known (see `service.stack`).

    With a `launcher`, the app also runs the job scheduler in the background for as long as it lives; with
    an `engine`, it answers chat and completions.
    """
    db = Database(settings.resolved_database_url)
    db.migrate()
    ensure_admin_tenant(db)
    context = AppContext(
        settings=settings,
        db=db,
        store=ObjectStore(store_credentials(settings), settings.s3_bucket),
        keys=KeyStore(db, resolve_admin_key(settings)),
        probes=dict(probes or {}),
        launcher=launcher,
        engine=engine,
    )
    tasks = tasks or ThreadRunner()
    context.vector_stores = VectorStores(context, tasks)
    context.eval_runs = EvalRunner(context, tasks)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        context.vector_stores.resume()
        context.eval_runs.resume()
        background = [asyncio.create_task(context.eval_runs.run_forever())]
        if launcher is not None:
            scheduler = JobScheduler(settings, JobStore(db), launcher)
            context.probes["jobs"] = scheduler.probe
            background.append(asyncio.create_task(scheduler.run_forever()))
        yield
        for task in background:
            task.cancel()

    app = FastAPI(title="tuneserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.context = context
    install_error_handlers(app)
    for module in (health, models, chat, files, fine_tuning, vector_stores, evals, admin):
        app.include_router(module.router)
    return app
