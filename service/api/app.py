"""create_app(settings) -> the FastAPI application; Ray Serve mounts it as the ingress.

The composition root: every service is built here, once, and gets its collaborators through its
constructor; routers find them in `app.state.services` (`service.api.deps`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from rag.embedder import model_name
from service import __version__
from service.api.deps import HealthProbe, Services
from service.api.errors import install_error_handlers
from service.api.guard import RequestGuard
from service.api.metrics import ApiMetrics
from service.api.routes import (
    admin,
    batches,
    chat,
    console,
    embeddings,
    evals,
    files,
    fine_tuning,
    health,
    metrics,
    models,
    responses,
    vector_stores,
)
from service.batches.runner import BatchRunner
from service.batches.service import BatchService, inputs_in_use, validate_batch_file
from service.evals.runs import EvalRunner
from service.evals.service import EvalService
from service.files.service import FileService, validate_image_file
from service.fine_tuning.evals import JobEvals
from service.fine_tuning.launcher import Launcher
from service.fine_tuning.scheduler import JobScheduler
from service.fine_tuning.service import JobService, validate_training_file
from service.fine_tuning.store import JobStore
from service.inference.chat import ChatService
from service.inference.embeddings import EmbeddingService
from service.inference.engine import InferenceEngine
from service.inference.responses import ResponsesService
from service.inference.stored_completions import StoredCompletions
from service.inference.stored_responses import StoredResponses
from service.models.adapters import AdapterChecker
from service.models.registry import ModelRegistry
from service.platform.auth import KeyStore, ensure_admin_tenant, resolve_admin_key
from service.platform.db import Database
from service.platform.limits import TenantLimits
from service.platform.quotas import LimitPolicy
from service.platform.settings import Settings
from service.platform.storage import ObjectStore, store_credentials
from service.platform.tasks import Background, TaskRunner, ThreadRunner
from service.protocol.common import ERROR_RESPONSES
from service.vector_stores.service import VectorStores

log = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 3600  # how often orphaned file objects and expired responses are looked for
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
    store: ObjectStore | None = None,
    cluster_metrics: Callable[[], list[str]] | None = None,
) -> FastAPI:
    """Build the API for a stack whose object store endpoint is known (see `service.stack.supervisor`).

    With a `launcher`, the app also runs the job scheduler in the background for as long as it lives; with
    an `engine`, it answers chat and completions. `tasks` and `store` replace the defaults (a thread per
    task, the settings' S3 store) where the caller has its own. `cluster_metrics` gives the Prometheus texts
    of the cluster's nodes, which GET /metrics appends.
    """
    db = Database(settings.resolved_database_url)
    db.migrate()
    ensure_admin_tenant(db)
    store = store or ObjectStore(store_credentials(settings), settings.s3_bucket)
    tasks = tasks or ThreadRunner()
    background = Background()
    keys = KeyStore(db, resolve_admin_key(settings))
    policy = LimitPolicy.of(settings, db)
    job_store = JobStore(db)
    files_service = FileService(
        db,
        store,
        settings.max_file_bytes,
        {
            "fine-tune": partial(validate_training_file, image_domains=settings.image_url_domains),
            "vision": validate_image_file,
            "batch": validate_batch_file,
        },
        policy,
        # A job's and a batch's files outlive their deletion until the work ends.
        in_use=lambda: job_store.keys_in_use() | inputs_in_use(db),
    )
    adapters = AdapterChecker(store, settings.serving_max_lora_rank)
    model_registry = ModelRegistry(settings, db, store, adapters)
    stores = VectorStores(settings, db, store, files_service, tasks, background, policy)
    chat_service = ChatService(
        model_registry,
        adapters,
        stores,
        engine,
        files_service,
        settings.serving_max_images_per_prompt,
        tuple(settings.image_url_domains),
    )
    retention_s = settings.response_retention_days * 86400
    stored_responses = StoredResponses(db, files_service, retention_s)
    stored_completions = StoredCompletions(db, files_service, retention_s)
    files_service.kept_elsewhere = lambda t: stored_responses.bytes_of(t) + stored_completions.bytes_of(t)
    eval_service = EvalService(
        settings, db, store, files_service, model_registry, chat_service, stores, policy, stored_completions
    )
    eval_runner = EvalRunner(settings, db, store, keys, model_registry, tasks, background)
    limits = TenantLimits(
        settings.rate_limit_requests_per_minute,
        settings.max_concurrent_streams_per_tenant,
        settings.rate_limit_tokens_per_minute,
        per_tenant=lambda tenant: policy(tenant).rates(),
    )
    api_metrics = ApiMetrics(cluster_metrics, on_tokens=limits.record_tokens)
    embedding_service = EmbeddingService(model_name(settings.embedding_model), lambda: stores.embedder)
    responses_service = ResponsesService(stored_responses)
    batch_runner = BatchRunner(
        db,
        store,
        files_service,
        keys,
        chat_service,
        embedding_service,
        responses_service,
        background,
        settings.batch_requests_in_flight,
        observe=api_metrics.observer("batch"),
    )
    services = Services(
        settings=settings,
        db=db,
        store=store,
        keys=keys,
        files=files_service,
        models=model_registry,
        vector_stores=stores,
        chat=chat_service,
        responses=responses_service,
        completions=stored_completions,
        embeddings=embedding_service,
        batches=BatchService(db, files_service, batch_runner, policy),
        evals=eval_service,
        eval_runs=eval_runner,
        jobs=JobService(settings, job_store, files_service, model_registry, eval_service, launcher),
        limits=limits,
        quotas=policy,
        metrics=api_metrics,
        launcher=launcher,
        probes=dict(probes or {}),
    )
    scheduler = JobScheduler(settings, job_store, launcher, policy) if launcher is not None else None
    if scheduler is not None:
        services.probes["jobs"] = scheduler.probe
    job_evals = JobEvals(job_store, eval_service, eval_runner)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        background.attach(asyncio.get_running_loop())
        await asyncio.to_thread(stores.resume)
        await asyncio.to_thread(eval_runner.resume)
        await asyncio.to_thread(batch_runner.resume)
        loops = [asyncio.create_task(job_evals.run_forever())]
        loops.append(asyncio.create_task(_sweep(files_service, stored_responses, stored_completions)))
        if scheduler is not None:
            loops.append(asyncio.create_task(scheduler.run_forever()))
        yield
        for task in loops:
            task.cancel()

    app = FastAPI(title="tuneserve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_file_bytes,
        body_timeout_s=settings.request_body_timeout_s,
    )
    for module in (
        health,
        metrics,
        models,
        chat,
        responses,
        embeddings,
        files,
        fine_tuning,
        vector_stores,
        evals,
        batches,
        admin,
    ):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(console.router)  # the web console at /, outside the OpenAPI document
    return app


async def _sweep(files: FileService, responses: StoredResponses, completions: StoredCompletions) -> None:
    """In the background, at start and then every SWEEP_INTERVAL_S: file objects no file owns (those a
    crash left behind, and those of files deleted while a job read them, once the job has ended), and
    stored responses and chat completions past their retention. A failure only costs storage until the
    next sweep."""
    sweeps = [
        (files.sweep_orphans, "removed %d file object(s) of deleted files"),
        (responses.expire, "deleted %d stored response(s) past their retention"),
        (completions.expire, "deleted %d stored chat completion(s) past their retention"),
    ]
    while True:
        for sweep, done in sweeps:
            try:
                swept = await asyncio.to_thread(sweep)
            except Exception:
                log.warning("sweep %s failed", sweep.__qualname__, exc_info=True)
            else:
                if swept:
                    log.info(done, swept)
        await asyncio.sleep(SWEEP_INTERVAL_S)
