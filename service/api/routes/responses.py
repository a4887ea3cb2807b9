"""POST /v1/responses: OpenAI's Responses API, stateless, answered through the chat path
(service.protocol.responses says what is translated)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from service.api.deps import CurrentPrincipal, Svc
from service.api.errors import schema_error
from service.api.routes.chat import generate
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.protocol.chat import ChatCompletionCreate
from service.protocol.response_output import ItemIds, ResponseStream, from_chat
from service.protocol.responses import ResponseCreate, ResponsesInputError, input_param, to_chat

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/responses", response_model=None, summary="Create a model response")
async def create_response(
    body: ResponseCreate, services: Svc, principal: CurrentPrincipal
) -> JSONResponse | StreamingResponse:
    """OpenAI's Responses API for a base model or one of the caller's fine-tuned models: text and images
    in, text and function calls out, streamed as its typed events with `stream: true`. Stateless: the
    whole conversation comes in `input` (`previous_response_id` is a 400), and `store` is `false`."""
    request = body.model_dump(exclude_unset=True)
    response_id = new_id("resp_")
    try:
        try:
            chat = ChatCompletionCreate.model_validate(to_chat(request))
        except ResponsesInputError as exc:
            raise ApiError(400, str(exc), param=exc.param) from None
        except ValidationError as exc:  # the chat request's schema, as the chat route answers it
            raise schema_error(exc.errors()) from None
        result, headers = await generate(
            "chat", chat, services, principal, label="responses", keep_usage=True
        )
    except ApiError as err:  # the chat path names its own fields: name the request's
        param = input_param(err.param, request)
        if err.param is not None and param != err.param:
            err.message = err.message.replace(err.param, param)
            err.param = param
        raise
    if isinstance(result, dict):
        return JSONResponse(from_chat(request, result, response_id, ItemIds(response_id)), headers=headers)
    events = _events(result, ResponseStream(request, response_id))
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers}
    )


async def _events(chunks: AsyncIterator[str], stream: ResponseStream) -> AsyncIterator[str]:
    """The chat stream's Server-Sent Events (one or several a packet) as the Responses stream's."""
    yield _sse(stream.start())
    pending = ""
    try:
        async for packet in chunks:
            pending += packet
            *complete, pending = pending.split("\n\n")
            out = []
            for event in complete:
                data = event.removeprefix("data: ").strip()
                if not data or data == "[DONE]" or data.startswith(":"):
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    yield _sse(out + stream.failed(chunk["error"]))
                    return
                out += stream.feed(chunk)
            if out:
                yield _sse(out)
        yield _sse(stream.finish())
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def _sse(events: list[dict]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events)
