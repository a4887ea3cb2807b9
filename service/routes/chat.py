"""POST /v1/chat/completions and /v1/completions: tenancy and adapter checks, then the inference engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from rag.prompting import augment, last_user_text
from service.deps import Context, CurrentPrincipal
from service.errors import ApiError
from service.inference import Endpoint
from service.protocol.chat import ChatCompletionCreate, CompletionCreate, SamplingFields
from service.protocol.vector_stores import RetrievalOptions
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
    payload = body.model_dump(exclude_unset=True, exclude={"retrieval"})
    citations = None
    if isinstance(body, ChatCompletionCreate) and body.retrieval is not None:
        payload["messages"], citations = await _retrieve(body.retrieval, payload["messages"], ctx, tenant)
    result = await engine.generate(endpoint, model, payload)
    if isinstance(result, dict):
        return JSONResponse(result if citations is None else {**result, "citations": citations})
    if citations is not None:
        result = _with_citations(result, citations)
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _retrieve(
    options: RetrievalOptions, messages: list[dict], ctx: Context, tenant: str
) -> tuple[list[dict], list[dict]]:
    question = last_user_text(messages)
    if not question.strip():
        raise ApiError(400, "Retrieval needs a user message to retrieve for.", param="messages")
    results = await ctx.vector_stores.search(
        tenant, options.vector_store_ids, [question], options.max_num_results, options.filters
    )
    citations = [
        {
            "index": i,
            "file_id": r.file_id,
            "filename": r.filename,
            "score": r.score,
            "text": r.content[0].text,
        }
        for i, r in enumerate(results, 1)
    ]
    return augment(messages, [(c["filename"], c["text"]) for c in citations]), citations


async def _with_citations(stream: AsyncIterator[str], citations: list[dict]) -> AsyncIterator[str]:
    """The stream with `citations` added to its first chunk."""
    first = True
    async for text in stream:
        if first and text.startswith("data: {"):
            event, _, rest = text[len("data: ") :].partition("\n\n")
            text = f"data: {json.dumps({**json.loads(event), 'citations': citations})}\n\n{rest}"
            first = False
        yield text
