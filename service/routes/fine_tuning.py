"""/v1/fine_tuning/jobs: OpenAI's fine-tuning API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.db import JobEventRow
from service.deps import Context, CurrentPrincipal
from service.jobs.service import JobService
from service.jobs.state import JobStatus
from service.jobs.store import JobStore
from service.protocol.common import ListResponse
from service.protocol.fine_tuning import FineTuningJob, FineTuningJobCreate, JobCheckpoint, JobEvent

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=FineTuningJob, summary="Create a fine-tuning job")
async def create_job(body: FineTuningJobCreate, ctx: Context, principal: CurrentPrincipal) -> FineTuningJob:
    """Validates the model, the files (every line, tokenized against `max_seq_length`) and the
    hyperparameters before anything starts; `"auto"` values are resolved and recorded on the job."""
    jobs = JobService(ctx)
    return jobs.to_api(await jobs.create(principal.tenant, body))


@router.get("", response_model=ListResponse[FineTuningJob], summary="List fine-tuning jobs")
def list_jobs(
    ctx: Context,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[FineTuningJob]:
    rows = JobStore(ctx.db).list(principal.tenant, after, limit)
    data = [JobService(ctx).to_api(r) for r in rows[:limit]]
    return ListResponse[FineTuningJob].page(data, has_more=len(rows) > limit)


@router.get("/{job_id}", response_model=FineTuningJob, summary="Retrieve a fine-tuning job")
def retrieve_job(job_id: str, ctx: Context, principal: CurrentPrincipal) -> FineTuningJob:
    jobs = JobService(ctx)
    return jobs.to_api(jobs.get(principal.tenant, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, summary="Cancel a fine-tuning job")
def cancel_job(job_id: str, ctx: Context, principal: CurrentPrincipal) -> FineTuningJob:
    """Stops the job's Ray run; 409 if the job already finished."""
    jobs = JobService(ctx)
    return jobs.to_api(jobs.cancel(principal.tenant, job_id, ctx.launcher))


def _event(row: JobEventRow) -> JobEvent:
    return JobEvent(
        id=row.id,
        created_at=row.created_at,
        level=row.level,
        message=row.message,
        data=row.data,
        type=row.type,
    )


@router.get("/{job_id}/events", response_model=ListResponse[JobEvent], summary="List a job's events")
def list_events(
    job_id: str,
    ctx: Context,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: bool = False,
):  # noqa: ANN201
    """Newest first, paginated with `after`. With `stream=true`: a server-sent-event stream of every event,
    oldest first, that follows the job live and ends when it finishes."""
    JobService(ctx).get(principal.tenant, job_id)
    store = JobStore(ctx.db)
    if stream:
        return StreamingResponse(
            _follow(store, job_id), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    rows = store.events(job_id, after, limit)
    return ListResponse[JobEvent].page([_event(r) for r in rows[:limit]], has_more=len(rows) > limit)


async def _follow(store: JobStore, job_id: str) -> AsyncIterator[str]:
    last: str | None = None
    while True:
        rows = await asyncio.to_thread(store.events, job_id, last, 1000, False)
        for row in rows:
            yield f"data: {_event(row).model_dump_json()}\n\n"
            last = row.id
        job = await asyncio.to_thread(store.get, job_id)
        if job is None or (JobStatus(job.status).is_terminal and not rows):
            yield "data: [DONE]\n\n"
            return
        if not rows:
            await asyncio.sleep(0.5)


@router.get("/{job_id}/checkpoints", response_model=ListResponse[JobCheckpoint], summary="List checkpoints")
def list_checkpoints(
    job_id: str, ctx: Context, principal: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> ListResponse[JobCheckpoint]:
    """One checkpoint per epoch, newest first; each is a LoRA adapter in the object store."""
    job = JobService(ctx).get(principal.tenant, job_id)
    name = job.spec["fine_tuned_model"]
    rows = JobStore(ctx.db).checkpoints(job_id)
    data = [
        JobCheckpoint(
            id=r.id,
            created_at=r.created_at,
            fine_tuned_model_checkpoint=f"{name}:ckpt-step-{r.step}",
            fine_tuning_job_id=job_id,
            metrics={**r.metrics, "step": r.step},
            step_number=r.step,
        )
        for r in rows[:limit]
    ]
    return ListResponse[JobCheckpoint].page(data, has_more=len(rows) > limit)
