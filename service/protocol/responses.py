"""OpenAI's Responses API (`POST /v1/responses`), stateless, as a translation of chat completions: a request
becomes a chat request (the same models, images, tools, limits and engine), and the chat answer, whole or
streamed, becomes a response object or the Responses stream's events.

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
Nothing is stored: `store` is answered `false`, and what needs a stored response or conversation
(`previous_response_id`, `conversation`, `background`) or a tool that runs on OpenAI's side (web search,
code interpreter, ...) is a 400 naming the field. Pure: no I/O, nothing heavy.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.protocol.common import Metadata

ROLES = {"user", "assistant", "system", "developer"}
# vLLM's own extra sampling fields, passed on as chat completions pass them (extensions here too).
VLLM_SAMPLING = ("ignore_eos", "min_tokens", "top_k", "min_p", "repetition_penalty")
# A file_search tool is the chat path's retrieval (`service.protocol.vector_stores.RetrievalOptions`).
MAX_SEARCHED_STORES, MAX_SEARCH_RESULTS, DEFAULT_SEARCH_RESULTS = 8, 20, 4
STATELESS = {
    "previous_response_id": "previous_response_id needs a stored response; responses are not stored here: "
    "send the whole conversation in `input`",
    "conversation": "conversations are not stored here: send the whole conversation in `input`",
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
    store: bool | None = Field(None, description="Responses are never stored here; answered `false`.")
    metadata: Metadata | None = None
    user: str | None = None


def to_chat(request: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request that answers this Responses request."""
    for field, reason in STATELESS.items():
        if request.get(field) not in (None, False):
            raise ResponsesInputError(field, reason)
    messages, _ = _conversation(request)
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


def input_param(param: str | None, request: dict[str, Any]) -> str | None:
    """A chat error's parameter in the request's own terms: `messages[2].content[0]` is `input[3].content[0]`
    when `instructions` came first and two function calls made one message."""
    match = re.match(r"messages\[(\d+)\](.*)", param or "")
    if match is None:
        return "input" if param == "messages" else param
    origins = _conversation(request)[1]
    index = int(match.group(1))
    return origins[index] + match.group(2) if index < len(origins) else "input"


def _conversation(request: dict[str, Any]) -> tuple[list[dict], list[str]]:
    """The chat messages of `instructions` and `input`, and where in the request each one came from."""
    messages, origins = [], []
    if request.get("instructions"):
        messages.append({"role": "system", "content": request["instructions"]})
        origins.append("instructions")
    raw = request["input"]
    if not raw:
        raise ResponsesInputError("input", "input is empty: give a message, or a list of input items")
    if isinstance(raw, str):
        return [*messages, {"role": "user", "content": raw}], [*origins, "input"]
    made, made_from = _messages(raw)
    return messages + made, origins + made_from


def _messages(items: list) -> tuple[list[dict], list[str]]:
    messages: list[dict] = []
    origins: list[str] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
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
        else:
            raise ResponsesInputError(
                f"{at}.type",
                f"{at}.type {kind!r} is not available here; use message, function_call or "
                "function_call_output",
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
            parts.append({"type": "text", "text": part.get("text", "")})
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


# The answer ---------------------------------------------------------------------------------------------


def response_object(
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    output: list[dict],
    usage: dict | None,
    finish_reason: str | None,
    status: str = "completed",
) -> dict[str, Any]:
    """A response object: the request's settings, the output items, and usage in the Responses' names."""
    incomplete = finish_reason == "length"
    tools = request.get("tools") or []
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "incomplete" if incomplete and status == "completed" else status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": request["model"],
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": request.get("temperature", 1.0),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": _usage(usage),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _usage(usage: dict | None) -> dict | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {
            "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        },
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens", 0),
    }


def output_items(message: dict, item_ids: ItemIds, citations: list[dict] | None = None) -> list[dict]:
    """A chat answer's message as output items: its text as a message (citing the files it was given,
    if any), each tool call as a function_call."""
    items = []
    if message.get("content"):
        text = message["content"]
        items.append(_message_item(item_ids.message, text, "completed", file_citations(citations, len(text))))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        call_id = call.get("id")
        items.append(
            _call_item(
                item_ids.call(call_id), call_id, fn.get("name"), fn.get("arguments") or "", "completed"
            )
        )
    return items


def from_chat(
    request: dict[str, Any], chat: dict[str, Any], response_id: str, item_ids: ItemIds
) -> dict[str, Any]:
    """The response object for a whole (not streamed) chat completion (with its retrieval's `citations`
    when the request had a file_search tool)."""
    choice = (chat.get("choices") or [{}])[0]
    citations = chat.get("citations")
    output = [] if citations is None else [search_item(request, item_ids, citations, "completed")]
    output += output_items(choice.get("message") or {}, item_ids, citations)
    created = int(chat.get("created") or time.time())
    return response_object(
        request, response_id, created, output, chat.get("usage"), choice.get("finish_reason")
    )


def search_item(request: dict[str, Any], item_ids: ItemIds, citations: list[dict], status: str) -> dict:
    """The file_search_call item: what was searched for and, when the request includes
    `file_search_call.results`, the chunks found (the chat path's citations)."""
    results = None
    if "file_search_call.results" in (request.get("include") or []):
        results = [
            {k: c.get(k) for k in ("file_id", "filename", "score", "text")} | {"attributes": {}}
            for c in citations
        ]
    return {
        "type": "file_search_call",
        "id": item_ids.search,
        "status": status,
        "queries": [_last_user_text(request)],
        "results": results if status == "completed" else None,
    }


def file_citations(citations: list[dict] | None, end: int) -> list[dict]:
    """OpenAI's file_citation annotations, one per file the answer was given, at the end of the text."""
    files = {c["file_id"]: c.get("filename") for c in citations or []}
    return [
        {"type": "file_citation", "file_id": file_id, "filename": name, "index": end}
        for file_id, name in files.items()
    ]


def _last_user_text(request: dict[str, Any]) -> str:
    raw = request.get("input")
    if isinstance(raw, str):
        return raw
    for item in reversed(raw or []):
        if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


class ItemIds:
    """The ids of a response's output items, made from the response's own id (`msg_…`, `fc_…`)."""

    def __init__(self, response_id: str) -> None:
        self.tail = response_id.removeprefix("resp_")
        self.message = f"msg_{self.tail}"
        self.search = f"fs_{self.tail}"

    def call(self, call_id: str | None) -> str:
        return f"fc_{self.tail}_{call_id}"


def _message_item(item_id: str, text: str, status: str, annotations: list[dict] | None = None) -> dict:
    content = (
        [{"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}]
        if status == "completed"
        else []
    )
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str | None, name: str | None, arguments: str, status: str) -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


class ResponseStream:
    """Chat completion chunks in, the Responses stream's events out (`{"type": ..., "sequence_number": n}`):
    response.created and .in_progress; for the text, an output message item with its output_text part and
    its deltas; for each tool call, a function_call item with its argument deltas; each item done in turn;
    then response.completed (or .incomplete) with the whole response and its usage."""

    def __init__(self, request: dict[str, Any], response_id: str) -> None:
        self.request = request
        self.response_id = response_id
        self.ids = ItemIds(response_id)
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict] = []  # finished items
        self.open: dict | None = None  # the item being streamed: {"item": ..., "index": n, "text": ...}
        self.calls: dict[int, dict] = {}  # chat tool-call index -> its open item
        self.usage: dict | None = None
        self.finish_reason: str | None = None
        self.citations: list[dict] | None = None  # what a file_search found

    def start(self) -> list[dict]:
        snapshot = self._response("in_progress")
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, chunk: dict) -> list[dict]:
        """The events of one chat chunk."""
        events: list[dict] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("citations") is not None:  # the retrieval's, in the first chunk: searched before
            events += self._searched(chunk["citations"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not part of the Responses API
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def finish(self) -> list[dict]:
        events = self._close()
        status = "incomplete" if self.finish_reason == "length" else "completed"
        return events + [self._event(f"response.{status}", response=self._response("completed"))]

    def failed(self, error: dict) -> list[dict]:
        """The events that end a stream whose chat stream ended with an error."""
        return self._close() + [
            self._event(
                "error", code=error.get("code"), message=error.get("message", ""), param=error.get("param")
            )
        ]

    def _text(self, text: str) -> list[dict]:
        events = []
        if self.open is None or self.open["item"]["type"] != "message":
            events += self._close()
            events += self._add(_message_item(self.ids.message, "", "in_progress"))
            part = {"type": "output_text", "text": "", "annotations": []}
            events.append(self._event("response.content_part.added", **_in_text(self.open), part=part))
        self.open["text"] += text
        events.append(
            self._event("response.output_text.delta", **_in_text(self.open), delta=text, logprobs=[])
        )
        return events

    def _call(self, call: dict) -> list[dict]:
        events = []
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.calls:
            events += self._close()
            call_id = call.get("id")
            events += self._add(
                _call_item(self.ids.call(call_id), call_id, fn.get("name"), "", "in_progress")
            )
            self.calls[index] = self.open
        current = self.calls[index]
        if fn.get("arguments"):
            current["text"] += fn["arguments"]
            delta = fn["arguments"]
            events.append(self._event("response.function_call_arguments.delta", **_of(current), delta=delta))
        return events

    def _searched(self, citations: list[dict]) -> list[dict]:
        self.citations = citations
        events = self._add(search_item(self.request, self.ids, citations, "in_progress"))
        for phase in ("in_progress", "searching", "completed"):
            events.append(self._event(f"response.file_search_call.{phase}", **_of(self.open)))
        self.open["item"] = search_item(self.request, self.ids, citations, "completed")
        return events + self._close()

    def _add(self, item: dict) -> list[dict]:
        """Open `item` as the next output item."""
        self.open = {"item": item, "index": len(self.output), "text": ""}
        return [self._event("response.output_item.added", output_index=self.open["index"], item=item)]

    def _close(self) -> list[dict]:
        """The events that finish the open item, which joins the output."""
        if self.open is None:
            return []
        opened, text = self.open, self.open["text"]
        self.open = None
        if opened["item"]["type"] == "message":
            cited = file_citations(self.citations, len(text))
            done = _message_item(opened["item"]["id"], text, "completed", cited)
            events = [
                self._event("response.output_text.done", **_in_text(opened), text=text, logprobs=[]),
                self._event("response.content_part.done", **_in_text(opened), part=done["content"][0]),
            ]
        elif opened["item"]["type"] == "file_search_call":
            done, events = opened["item"], []
        else:
            done = {**opened["item"], "arguments": text, "status": "completed"}
            events = [self._event("response.function_call_arguments.done", **_of(opened), arguments=text)]
        self.output.append(done)
        return events + [self._event("response.output_item.done", output_index=opened["index"], item=done)]

    def _response(self, status: str) -> dict:
        finish = self.finish_reason if status == "completed" else None
        usage = self.usage if status == "completed" else None
        return response_object(
            self.request, self.response_id, self.created_at, list(self.output), usage, finish, status
        )

    def _event(self, kind: str, **fields: Any) -> dict:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event


def _of(opened: dict) -> dict:
    """Where an open item's events point: its id and place in the output."""
    return {"item_id": opened["item"]["id"], "output_index": opened["index"]}


def _in_text(opened: dict) -> dict:
    """Where a message's text events point: the item, and its one output_text part."""
    return {**_of(opened), "content_index": 0}
