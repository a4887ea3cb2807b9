"""POST /v1/chat/completions and /v1/completions: tenancy and adapter checks, then the inference engine."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from service.deps import Context, CurrentPrincipal
from service.errors import ApiError
from service.inference import Endpoint
from service.protocol.chat import ChatCompletionCreate, CompletionCreate, SamplingFields
from service.registry import ModelRegistry

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None, summary="Create a chat completion")
async def create_chat_completion(
    body: ChatCompletionCreate, ctx: Context, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's chat completions for a base model or one of the caller's fine-tuned models, streamed as
    Server-Sent Events with `stream: true` (`stream_options.include_usage` adds a final usage chunk)."""
    return await _generate("chat", body, ctx, principal.tenant)


@router.post("/completions", response_model=None, summary="Create a completion")
async def create_completion(
    body: CompletionCreate, ctx: Context, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's (legacy) completions; `echo` with `logprobs` scores the prompt's tokens, as evaluation
    harnesses need for log-likelihoods."""
    return await _generate("completions", body, ctx, principal.tenant)


async def _generate(
    endpoint: Endpoint, body: SamplingFields, ctx: Context, tenant: str
) -> JSONResponse | StreamingResponse:
    model = ModelRegistry(ctx).resolve(tenant, body.model)
    engine = ctx.engine
    if engine is None or not engine.serves(model.base_model):
        raise ApiError(
            503,
            f"The base model '{model.base_model}' is not deployed on this stack (TUNESERVE_SERVED_MODELS).",
            param="model",
            code="model_not_deployed",
        )
    if not model.is_base:
        await asyncio.to_thread(ctx.adapters.check, model.id, model.adapter_prefix)
    result = await engine.generate(endpoint, model, body.model_dump(exclude_unset=True))
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
