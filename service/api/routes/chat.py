"""POST /v1/chat/completions and /v1/completions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import CurrentPrincipal, Svc
from service.api.streams import released_at_end, while_authorized
from service.inference.engine import Endpoint
from service.platform.auth import Principal
from service.platform.errors import ApiError
from service.protocol.chat import ChatCompletionCreate, CompletionCreate, SamplingFields

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None, summary="Create a chat completion")
async def create_chat_completion(
    body: ChatCompletionCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completions for a base model or one of the caller's fine-tuned models, streamed as
    Server-Sent Events with `stream: true` (`stream_options.include_usage` adds a final usage chunk)."""
    return await _generate("chat", body, services, principal)


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
    return StreamingResponse(
        result, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


async def generate(
    endpoint: Endpoint,
    body: SamplingFields,
    services: Svc,
    principal: Principal,
    *,
    label: str | None = None,
    keep_usage: bool | None = None,
) -> tuple[dict | AsyncIterator[str], dict[str, str]]:
    """Within the tenant's limits (requests per minute, open streams; 429 past them), the engine's answer,
    metered under `label` (the endpoint's name unless given; service.api.metrics), with the rate-limit
    headers. A stream ends when its key is revoked and gives its slot back when it ends; its usage chunk
    reaches the caller if the client asked for it (or `keep_usage`)."""
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
    metered = services.metrics.metered(result, label, model, tenant, start, keep_usage)
    authorized = while_authorized(metered, partial(services.keys.still_valid, principal))
    return released_at_end(authorized, admission.release), admission.headers
