"""OpenAI's Responses API (`POST /v1/responses`) as a translation of chat completions: a request
becomes a chat request (the same models, images, tools, limits and engine), and the chat answer, whole or
streamed, becomes a response object or the Responses stream's events (`service.protocol.response_output`).

What is translated:
  input        a string (one user message), or a list of items: messages (`role`, `content` a string or
               parts `input_text`, `input_image` with `image_url` or `file_id`, `output_text`),
               `function_call` and `function_call_output` items
  instructions a system message ahead of the input
  tools        function tools (`{"type": "function", "name", "description", "parameters"}`), tool_choice,
               parallel_tool_calls; a `file_search` tool (`vector_store_ids`, `max_num_results`, `filters`)
               is the service's own retrieval: a file_search_call item (its results with `include`), and
               file_citation annotations on the answer
  text.format  `text`, `json_object` or `json_schema` (`name`, `schema`, `strict`): the chat's response_format
  sampling     max_output_tokens, temperature, top_p, user; as extensions seed and vLLM's ignore_eos,
               min_tokens, top_k, min_p, repetition_penalty
A response is stored unless `store` is false (`service.inference.stored_responses`): a later request
continues it with `previous_response_id` (its input and output items come ahead of the new input; its
instructions do not, as at OpenAI), and it can be read back with its input items, or deleted. What needs a
conversation object, a stored prompt, a background run (`conversation`, `prompt`, `background`) or a tool
that runs on OpenAI's side (web search, code interpreter, ...) is a 400 naming the field.
Pure: no I/O, nothing heavy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.protocol.common import Metadata

ROLES = {"user", "assistant", "system", "developer"}
# vLLM's own extra sampling fields, passed on as chat completions pass them (extensions here too).
VLLM_SAMPLING = ("ignore_eos", "min_tokens", "top_k", "min_p", "repetition_penalty")
# A file_search tool is the chat path's retrieval (`service.protocol.vector_stores.RetrievalOptions`).
MAX_SEARCHED_STORES, MAX_SEARCH_RESULTS, DEFAULT_SEARCH_RESULTS = 8, 20, 4
UNAVAILABLE = {
    "conversation": "conversation objects are not available here: continue a response with "
    "`previous_response_id`, or send the whole conversation in `input`",
    "background": "background responses are not available here",
    "prompt": "stored prompts are not available here",
}


class ResponsesInputError(ValueError):
    """A Responses request that cannot be translated; `param` names the field (`input[2].content[0]`)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


class ResponseCreate(BaseModel):
    """The request's essentials, for validation and the docs; other fields are checked in translation."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="A base model id or one of your fine-tuned model ids (`GET /v1/models`).")
    input: str | list[dict[str, Any]] = Field(description="A user message, or a list of input items.")
    instructions: str | None = Field(None, description="A system message ahead of the input.")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = Field(
        None, description="Function tools, and one file_search tool over your vector stores."
    )
    include: list[str] | None = Field(None, description='`["file_search_call.results"]`: the chunks found.')
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = Field(None, description='`{"format": {"type": "json_schema", ...}}` etc.')
    stream: bool | None = False
    previous_response_id: str | None = Field(
        None, description="A stored response of yours to continue: its input and output come first."
    )
    store: bool | None = Field(
        None, description="`false`: keep nothing (it cannot be continued or read back). Stored by default."
    )
    metadata: Metadata | None = None
    user: str | None = None


def to_chat(request: dict[str, Any], history: list[dict] | None = None) -> dict[str, Any]:
    """The chat completions request that answers this Responses request, after the items of the
    responses it continues (`history_items`)."""
    for field, reason in UNAVAILABLE.items():
        if request.get(field) not in (None, False):
            raise ResponsesInputError(field, reason)
    messages, _ = _conversation(request, history or [])
    chat: dict[str, Any] = {"model": request["model"], "messages": messages}
    for ours, theirs in (
        ("max_output_tokens", "max_completion_tokens"),
        ("temperature",) * 2,
        ("top_p",) * 2,
    ):
        if request.get(ours) is not None:
            chat[theirs] = request[ours]
    for same in ("seed", "user", "parallel_tool_calls", "stream", *VLLM_SAMPLING):
        if request.get(same) is not None:
            chat[same] = request[same]
    tools = request.get("tools") or []
    searches = [(i, t) for i, t in enumerate(tools) if isinstance(t, dict) and t.get("type") == "file_search"]
    if searches:
        chat["retrieval"] = _retrieval(searches)
    functions = [_tool(t, i) for i, t in enumerate(tools) if (i, t) not in searches]
    if functions:
        chat["tools"] = functions
    if request.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(request["tool_choice"])
    fmt = (request.get("text") or {}).get("format")
    if fmt is not None:
        chat["response_format"] = _response_format(fmt)
    return chat


def input_param(param: str | None, request: dict[str, Any], history: list[dict] | None = None) -> str | None:
    """A chat error's parameter in the request's own terms: `messages[2].content[0]` is `input[3].content[0]`
    when `instructions` came first and two function calls made one message; a message of the responses
    continued is `previous_response_id`."""
    match = re.match(r"messages\[(\d+)\](.*)", param or "")
    if match is None:
        return "input" if param == "messages" else param
    origins = _conversation(request, history or [])[1]
    index = int(match.group(1))
    if index >= len(origins):
        return "input"
    return origins[index] if origins[index] == "previous_response_id" else origins[index] + match.group(2)


def input_items(request: dict[str, Any], new_id: Callable[[], str]) -> list[dict]:
    """This request's input as the items a stored response keeps (`GET /v1/responses/{id}/input_items`):
    a string is a user message, a message's string content one text part, and each item has an id (its
    own, or `new_id()`)."""
    raw = request["input"]
    items = [{"type": "message", "role": "user", "content": raw}] if isinstance(raw, str) else raw
    kept = []
    for item in items:
        item = {"type": "message", **item}
        if item["type"] == "message":
            text_type = "output_text" if item.get("role") == "assistant" else "input_text"
            if isinstance(item.get("content"), str):
                item["content"] = [{"type": text_type, "text": item["content"]}]
            item.setdefault("status", "completed")
        kept.append({"id": item.get("id") or new_id(), **item})
    return kept


def history_items(turns: list[tuple[list[dict], dict]]) -> list[dict]:
    """The items a conversation has so far: each stored turn's (input items, response), oldest first, as
    its input and then its output."""
    return [item for inputs, response in turns for item in [*inputs, *response.get("output", [])]]


def _conversation(request: dict[str, Any], history: list[dict]) -> tuple[list[dict], list[str]]:
    """The chat messages of `instructions`, the continued responses' items and `input`, and where in the
    request each one came from."""
    messages, origins = [], []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
        origins.append("instructions")
    if history:
        made, _ = _messages(history, "previous_response_id")
        messages += made
        origins += ["previous_response_id"] * len(made)
    raw = request["input"]
    if not raw:
        raise ResponsesInputError("input", "input is empty: give a message, or a list of input items")
    if isinstance(raw, str):
        return [*messages, {"role": "user", "content": raw}], [*origins, "input"]
    made, made_from = _messages(raw)
    return messages + made, origins + made_from


def _messages(items: list, where: str = "input") -> tuple[list[dict], list[str]]:
    messages: list[dict] = []
    origins: list[str] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ResponsesInputError(at, f"{at} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise ResponsesInputError(f"{at}.role", f"{at}.role must be one of {sorted(ROLES)}")
            messages.append({"role": role, "content": _content(item.get("content"), at)})
            origins.append(at)
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # consecutive calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                origins.append(at)
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
            origins.append(at)
        elif kind == "file_search_call":
            continue  # a search's record (an earlier response's output): what it found was that answer's
        else:
            raise ResponsesInputError(
                f"{at}.type",
                f"{at}.type {kind!r} is not available here; use message, function_call, "
                "function_call_output or file_search_call",
            )
    return messages, origins


def _content(content: Any, at: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ResponsesInputError(f"{at}.content", f"{at}.content must be a string or a list of parts")
    parts = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):  # a missing text was answered as "", a null one was a 500
                raise ResponsesInputError(f"{where}.text", f"{where}.text must be a string")
            parts.append({"type": "text", "text": text})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            if not isinstance(url, str):
                raise ResponsesInputError(where, f"{where} needs an image_url or a file_id")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise ResponsesInputError(
                f"{where}.type", f"{where}.type must be input_text, input_image or output_text, got {kind!r}"
            )
    if all(p["type"] == "text" for p in parts):  # text only: one string, as every chat template takes
        return "".join(p["text"] for p in parts)
    return parts


def _tool(tool: Any, i: int) -> dict:
    at = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise ResponsesInputError(
            f"{at}.type",
            f"{at}.type {kind!r} is not available here: function and file_search tools run here",
        )
    function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _retrieval(searches: list[tuple[int, dict]]) -> dict:
    """A file_search tool as the chat path's retrieval (the service's own vector stores)."""
    if len(searches) > 1:
        at = f"tools[{searches[1][0]}]"
        raise ResponsesInputError(at, f"{at}: one file_search tool a request (list every store in it)")
    i, tool = searches[0]
    ids = tool.get("vector_store_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SEARCHED_STORES:
        raise ResponsesInputError(
            f"tools[{i}].vector_store_ids",
            f"tools[{i}].vector_store_ids must list 1 to {MAX_SEARCHED_STORES} vector store ids",
        )
    n = tool.get("max_num_results", DEFAULT_SEARCH_RESULTS)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SEARCH_RESULTS:
        raise ResponsesInputError(
            f"tools[{i}].max_num_results",
            f"tools[{i}].max_num_results must be 1 to {MAX_SEARCH_RESULTS} here",
        )
    return {"vector_store_ids": ids, "max_num_results": n, "filters": tool.get("filters")}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt: Any) -> dict:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    raise ResponsesInputError("text.format.type", "text.format.type must be text, json_object or json_schema")
