"""The answer of the Responses API (`service.protocol.responses` translates the request): a whole chat
completion as a response object, and a streamed one's chunks as the Responses stream's typed events. Pure:
no I/O, nothing heavy."""

from __future__ import annotations

import time
from typing import Any


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
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": request.get("store") is not False,
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
