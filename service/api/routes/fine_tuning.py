"""/v1/fine_tuning/jobs: OpenAI's fine-tuning API."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from service.api.deps import CurrentPrincipal, Svc
from service.api.queries import metadata_filter
from service.api.streams import released_at_end, while_authorized
from service.protocol.common import ListResponse
from service.protocol.fine_tuning import FineTuningJob, FineTuningJobCreate, JobCheckpoint, JobEvent

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", response_model=FineTuningJob, summary="Create a fine-tuning job")
def create_job(body: FineTuningJobCreate, services: Svc, principal: CurrentPrincipal) -> FineTuningJob:
    """Validates the model, the files (every line, tokenized against `max_seq_length`) and the
    hyperparameters before anything starts; `"auto"` values are resolved and recorded on the job."""
    jobs = services.jobs
    return jobs.to_api(jobs.create(principal.tenant, body))


@router.get("", response_model=ListResponse[FineTuningJob], summary="List fine-tuning jobs")
def list_jobs(
    request: Request,
    services: Svc,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    # Declared for the OpenAPI document; the filter itself is read from the query string, whose
    # `metadata[KEY]` names no parameter can declare.
    metadata: Annotated[
        str | None,
        Query(
            description="`null`: only the jobs created without metadata. To filter by a key instead, send "
            "`metadata[KEY]=VALUE` (repeatable; every pair must match), as OpenAI's clients do."
        ),
    ] = None,
) -> ListResponse[FineTuningJob]:
    rows, more = services.jobs.list(principal.tenant, after, limit, metadata_filter(request))
    return ListResponse[FineTuningJob].page([services.jobs.to_api(r) for r in rows], has_more=more)


@router.get("/{job_id}", response_model=FineTuningJob, summary="Retrieve a fine-tuning job")
def retrieve_job(job_id: str, services: Svc, principal: CurrentPrincipal) -> FineTuningJob:
    return services.jobs.to_api(services.jobs.get(principal.tenant, job_id))


@router.post("/{job_id}/cancel", response_model=FineTuningJob, summary="Cancel a fine-tuning job")
def cancel_job(job_id: str, services: Svc, principal: CurrentPrincipal) -> FineTuningJob:
    """Stops the job's Ray run; 409 if the job already finished."""
    return services.jobs.to_api(services.jobs.cancel(principal.tenant, job_id))


@router.post("/{job_id}/pause", response_model=FineTuningJob, summary="Pause a fine-tuning job")
def pause_job(job_id: str, services: Svc, principal: CurrentPrincipal) -> FineTuningJob:
    """Stops the job's run and marks it `paused`; 400 unless it is queued or running. Its checkpoints stay
    usable as models meanwhile."""
    return services.jobs.to_api(services.jobs.pause(principal.tenant, job_id))


@router.post("/{job_id}/resume", response_model=FineTuningJob, summary="Resume a paused fine-tuning job")
def resume_job(job_id: str, services: Svc, principal: CurrentPrincipal) -> FineTuningJob:
    """Queues a paused job again; the run continues from its last checkpoint (optimizer state included),
    not from the start (once the paused run has stopped, when it is still stopping). 400 unless the job is
    paused."""
    return services.jobs.to_api(services.jobs.resume(principal.tenant, job_id))


@router.get("/{job_id}/events", response_model=ListResponse[JobEvent], summary="List a job's events")
def list_events(
    job_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    stream: bool = False,
) -> ListResponse[JobEvent] | StreamingResponse:
    """Newest first, paginated with `after`. With `stream=true`: a server-sent-event stream of every event,
    oldest first, that follows the job live and ends when it finishes."""
    jobs = services.jobs
    jobs.get(principal.tenant, job_id)
    if stream:
        # A followed job holds a stream slot of the tenant's (TUNESERVE_MAX_CONCURRENT_STREAMS_PER_TENANT)
        # until it finishes: such streams must not fill the ingress.
        admission = services.limits.admit(principal.tenant, stream=True, exempt=principal.is_admin)
        followed = while_authorized(jobs.follow(job_id), partial(services.keys.still_valid, principal))
        return StreamingResponse(
            released_at_end(followed, admission.release),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **admission.headers},
        )
    rows, more = jobs.store.events(job_id, after, limit)
    return ListResponse[JobEvent].page([jobs.event_to_api(r) for r in rows], has_more=more)


@router.get("/{job_id}/checkpoints", response_model=ListResponse[JobCheckpoint], summary="List checkpoints")
def list_checkpoints(
    job_id: str, services: Svc, principal: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> ListResponse[JobCheckpoint]:
    """The newest checkpoints of the job (the last three, and the one of the lowest validation loss),
    newest first. Each `fine_tuned_model_checkpoint` is a model: chat, evals and new jobs accept it."""
    job = services.jobs.get(principal.tenant, job_id)
    rows = services.jobs.store.checkpoints(job_id)
    data = [services.jobs.checkpoint_to_api(job, r) for r in rows[:limit]]
    return ListResponse[JobCheckpoint].page(data, has_more=len(rows) > limit)
