"""/v1/batches: OpenAI's Batch API. A file of requests (purpose `batch`) answered in the background through
the same models and engine as the HTTP routes, into an output file and an error file."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.api.deps import CurrentPrincipal, Svc
from service.protocol.batches import BatchCreate, BatchObject
from service.protocol.common import ListResponse

router = APIRouter(prefix="/v1/batches", tags=["batches"])
BatchId = Annotated[str, Path(description="The id of one of your batches (`batch_...`).")]


@router.post("", response_model=BatchObject, summary="Create a batch")
def create_batch(body: BatchCreate, services: Svc, principal: CurrentPrincipal) -> BatchObject:
    """Every line of the input file is checked first: a line that cannot run (not JSON, a duplicate
    `custom_id`, a `url` other than `endpoint`, a streamed body) is a 400 naming it, and nothing starts. A
    request the endpoint refuses (an unknown model, a bad field) is answered with its error in the error
    file; the others go on. Up to 50,000 requests and 200 MB; the window is `24h`."""
    row = services.batches.create(principal.tenant, principal.key_id, body)
    return services.batches.to_api(row)


@router.get("", response_model=ListResponse[BatchObject], summary="List batches")
def list_batches(
    services: Svc,
    principal: CurrentPrincipal,
    after: Annotated[str | None, Query(description="A batch id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ListResponse[BatchObject]:
    """Your batches, newest first."""
    rows, more = services.batches.list(principal.tenant, after, limit)
    return ListResponse[BatchObject].page([services.batches.to_api(r) for r in rows], has_more=more)


@router.get("/{batch_id}", response_model=BatchObject, summary="Retrieve a batch")
def retrieve_batch(batch_id: BatchId, services: Svc, principal: CurrentPrincipal) -> BatchObject:
    """Its status, request counts and token usage so far, and its output and error files once it ends."""
    return services.batches.to_api(services.batches.get(principal.tenant, batch_id))


@router.post("/{batch_id}/cancel", response_model=BatchObject, summary="Cancel a batch")
def cancel_batch(batch_id: BatchId, services: Svc, principal: CurrentPrincipal) -> BatchObject:
    """The batch starts no more requests (`cancelling`), then ends `cancelled` with the
    answers it has in its output file and the requests it did not answer in its error file. A batch that
    has ended is a 409."""
    return services.batches.to_api(services.batches.cancel(principal.tenant, batch_id))
