"""POST /v1/chat/completions and /v1/completions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import CurrentPrincipal, Svc
from service.api.queries import metadata_filter
from service.api.streams import kept_at_end, released_at_end, while_authorized
from service.inference.engine import Endpoint
from service.platform.auth import Principal
from service.platform.errors import ApiError
from service.protocol.chat import (
    ChatCompletionCreate,
    ChatCompletionUpdate,
    CompletionCreate,
    SamplingFields,
    StoredCompletionsExport,
    StoredCompletionsExported,
)
from service.protocol.common import page_of

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None, summary="Create a chat completion")
async def create_chat_completion(
    body: ChatCompletionCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completions for a base model or one of the caller's fine-tuned models, streamed as
    Server-Sent Events with `stream: true` (`stream_options.include_usage` adds a final usage chunk). With
    `store: true` the request and its answer are kept (streamed ones before the stream's `[DONE]`): a 429
    before anything is generated if that would pass the storage limit."""
    if not body.store:
        return await _generate("chat", body, services, principal)
    tenant, completions = principal.tenant, services.completions
    request = {
        "model": body.model,
        "messages": body.messages,
        **({"tools": body.tools} if body.tools else {}),
    }
    await asyncio.to_thread(completions.check_room, tenant, request)

    async def keep(completion: dict) -> None:
        await asyncio.to_thread(completions.save, tenant, request, body.metadata, completion)

    result, headers = await generate(
        "chat", body, services, principal, tap=lambda stream: kept_at_end(stream, keep)
    )
    if isinstance(result, dict):
        await keep(result)
        return JSONResponse(result, headers=headers)
    return _event_stream(result, headers)


CompletionId = Annotated[str, Path(description="The id of one of your stored chat completions.")]


@router.get("/chat/completions", summary="List stored chat completions")
def list_chat_completions(
    request: Request,
    services: Svc,
    principal: CurrentPrincipal,
    model: Annotated[str | None, Query(description="Only the completions of this model.")] = None,
    after: Annotated[str | None, Query(description="A completion id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "asc",
    # Declared for the OpenAPI document; the filter is read from the query string (`metadata[KEY]`).
    metadata: Annotated[
        str | None,
        Query(description="`metadata[KEY]=VALUE` (repeatable; every pair must match), or `null` for none."),
    ] = None,
) -> dict[str, Any]:
    """The chat completions you created with `store: true`, oldest first unless `order=desc`, each with its
    metadata (and the tools it was asked with)."""
    wanted = metadata_filter(request)
    data, more = services.completions.list(principal.tenant, model, wanted, after, limit, order)
    return page_of(data, more)


# Declared before /chat/completions/{completion_id}, whose POST would otherwise take "export" for an id.
@router.post(
    "/chat/completions/export",
    response_model=StoredCompletionsExported,
    summary="Export stored chat completions as a fine-tuning file",
)
def export_chat_completions(
    body: StoredCompletionsExport, services: Svc, principal: CurrentPrincipal
) -> StoredCompletionsExported:
    """Extension (distillation): the stored chat completions that match, oldest first, written as a file
    of chat fine-tuning data (purpose `fine-tune`), one chat a line: its messages as the client sent them,
    then its stored answer, and its tools. Answers cut off by `max_tokens` are left out; a 400 if none is
    left. The file counts toward the storage limit; `training_file` of a job takes it as it is."""
    return services.completions.export(principal.tenant, body)


@router.get("/chat/completions/{completion_id}", summary="Retrieve a stored chat completion")
def retrieve_chat_completion(completion_id: CompletionId, services: Svc, principal: CurrentPrincipal) -> dict:
    """The completion as it was answered (a streamed one as its chunks add up), with its metadata."""
    return services.completions.get(principal.tenant, completion_id)


@router.post("/chat/completions/{completion_id}", summary="Update a stored chat completion's metadata")
def update_chat_completion(
    completion_id: CompletionId, body: ChatCompletionUpdate, services: Svc, principal: CurrentPrincipal
) -> dict:
    """Replaces its metadata, the one thing of a stored completion that can change."""
    return services.completions.update(principal.tenant, completion_id, body.metadata)


@router.delete("/chat/completions/{completion_id}", summary="Delete a stored chat completion")
def delete_chat_completion(
    completion_id: CompletionId, services: Svc, principal: CurrentPrincipal
) -> dict[str, Any]:
    services.completions.delete(principal.tenant, completion_id)
    return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}


@router.get("/chat/completions/{completion_id}/messages", summary="List a stored chat completion's messages")
def list_chat_completion_messages(
    completion_id: CompletionId,
    services: Svc,
    principal: CurrentPrincipal,
    after: Annotated[str | None, Query(description="A message id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "asc",
) -> dict[str, Any]:
    """The messages the completion was asked with, as the client sent them, each with an id."""
    data, more = services.completions.messages(principal.tenant, completion_id, after, limit, order)
    return page_of(data, more)


@router.post("/completions", response_model=None, summary="Create a completion")
async def create_completion(
    body: CompletionCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's (legacy) completions; `echo` with `logprobs` scores the prompt's tokens, as evaluation
    harnesses need for log-likelihoods."""
    return await _generate("completions", body, services, principal)


async def _generate(
    endpoint: Endpoint, body: SamplingFields, services: Svc, principal: Principal
) -> JSONResponse | StreamingResponse:
    result, headers = await generate(endpoint, body, services, principal)
    if isinstance(result, dict):
        return JSONResponse(result, headers=headers)
    return _event_stream(result, headers)


def _event_stream(stream: AsyncIterator[str], headers: dict[str, str]) -> StreamingResponse:
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


async def generate(
    endpoint: Endpoint,
    body: SamplingFields,
    services: Svc,
    principal: Principal,
    *,
    label: str | None = None,
    keep_usage: bool | None = None,
    tap: Callable[[AsyncIterator[str]], AsyncIterator[str]] | None = None,
) -> tuple[dict | AsyncIterator[str], dict[str, str]]:
    """Within the tenant's limits (requests per minute, open streams; 429 past them), the engine's answer,
    metered under `label` (the endpoint's name unless given; service.api.metrics), with the rate-limit
    headers. A stream ends when its key is revoked and gives its slot back when it ends; its usage chunk
    reaches the caller if the client asked for it (or `keep_usage`). `tap` wraps the engine's stream
    first, while it still has its usage chunk."""
    start = time.perf_counter()
    tenant = principal.tenant
    label = label or endpoint
    payload, retrieval = body.for_engine()
    if keep_usage is None:
        keep_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
    if body.stream:
        # Always ask for the usage chunk, to count the tokens; the client gets it only if it asked.
        payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
    model = body.model
    try:
        admission = await asyncio.to_thread(  # the tenant's limits may be read from the database
            services.limits.admit, tenant, stream=bool(body.stream), exempt=principal.is_admin
        )
        try:
            result = await services.chat.generate(endpoint, payload, tenant, retrieval)
        except BaseException:
            admission.release()
            raise
    except ApiError as err:
        services.metrics.failed(label, model, tenant, err, start)
        raise
    if isinstance(result, dict):
        services.metrics.record(label, model, tenant, 200, start, result.get("usage"))
        return result, admission.headers
    if tap is not None:
        result = tap(result)
    metered = services.metrics.metered(result, label, model, tenant, start, keep_usage)
    authorized = while_authorized(metered, partial(services.keys.still_valid, principal))
    return released_at_end(authorized, admission.release), admission.headers
