"""/v1/responses: OpenAI's Responses API, answered through the chat path (service.protocol.responses says
what is translated), and the responses a tenant stored (service.inference.stored_responses)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse

from service.api.deps import CurrentPrincipal, Svc
from service.api.routes.chat import generate
from service.protocol.chat_stream import SseEvents
from service.protocol.common import page_of
from service.protocol.response_output import ItemIds, ResponseStream, from_chat
from service.protocol.responses import (
    ResponseCreate,
)

router = APIRouter(prefix="/v1", tags=["chat"])
ResponseId = Annotated[str, Path(description="The id of one of your stored responses (`resp_...`).")]


@router.post("/responses", response_model=None, summary="Create a model response")
async def create_response(
    body: ResponseCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's Responses API for a base model or one of the caller's fine-tuned models: text and images
    in, text and function calls out, streamed as its typed events with `stream: true`. The response is
    stored (unless `store: false`) before its last event is sent: `previous_response_id` continues it, and
    it can be read back and deleted."""
    request = body.model_dump(exclude_unset=True)
    tenant = principal.tenant
    prepared = await asyncio.to_thread(services.responses.prepare, tenant, request)
    with services.responses.renamed(prepared):
        result, headers = await generate(
            "chat", prepared.chat, services, principal, label="responses", keep_usage=True
        )

    async def keep(response: dict) -> None:
        await asyncio.to_thread(services.responses.keep, tenant, prepared, response)

    if isinstance(result, dict):
        response = from_chat(request, result, prepared.id, ItemIds(prepared.id))
        await keep(response)
        return JSONResponse(response, headers=headers)
    events = _events(result, ResponseStream(request, prepared.id), keep)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


@router.get("/responses/{response_id}", summary="Retrieve a stored response")
def retrieve_response(response_id: ResponseId, services: Svc, principal: CurrentPrincipal) -> dict[str, Any]:
    """A response as it was answered, with its output and usage."""
    return services.responses.stored.get(principal.tenant, response_id)


@router.delete("/responses/{response_id}", summary="Delete a stored response")
def delete_response(response_id: ResponseId, services: Svc, principal: CurrentPrincipal) -> dict[str, Any]:
    """Deletes the response and its input; a conversation that continued it stops before it."""
    services.responses.stored.delete(principal.tenant, response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/responses/{response_id}/input_items", summary="List a stored response's input items")
def list_input_items(
    response_id: ResponseId,
    services: Svc,
    principal: CurrentPrincipal,
    after: Annotated[str | None, Query(description="An item id: the page starts after it.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The items the response was given in `input` (not those of the responses it continued), each with an
    id, newest first unless `order=asc`."""
    items, more = services.responses.stored.input_items(principal.tenant, response_id, after, limit, order)
    return page_of(items, more)


async def _events(
    chunks: AsyncIterator[str], stream: ResponseStream, keep: Callable[[dict], Awaitable[None]]
) -> AsyncIterator[str]:
    """The chat stream's Server-Sent Events (one or several a packet) as the Responses stream's; the
    finished response is kept (`keep`) before its last event goes out, so that a client that continues it
    at once finds it."""
    yield _sse(stream.start())
    events = SseEvents()
    try:
        async for packet in chunks:
            out = []
            for chunk in events.feed(packet):
                if "error" in chunk:
                    yield _sse(out + stream.failed(chunk["error"]))
                    return
                out += stream.feed(chunk)
            if out:
                yield _sse(out)
        last = stream.finish()
        await keep(last[-1]["response"])
        yield _sse(last)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _sse(events: list[dict]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
