"""Reading a chat completion stream: its Server-Sent Events out of the packets they arrive in (one or several
events a packet, an event possibly cut across two), and the chat.completion object its chunks add up to."""

from __future__ import annotations

import json
from typing import Any


class SseEvents:
    """Feed it packets; it gives back the JSON bodies of the events they complete, in order (keep-alive
    comments and `[DONE]` left out)."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, packet: str) -> list[dict]:
        self._pending += packet
        *complete, self._pending = self._pending.split("\n\n")
        events = []
        for event in complete:
            data = event.removeprefix("data: ").strip()
            if data and data != "[DONE]" and not data.startswith(":"):
                events.append(json.loads(data))
        return events


class ChatAssembly:
    """The chat.completion that a stream's chunks make: each choice's text, refusal and tool calls joined
    from their deltas, its finish reason, and the usage of the stream's last chunk."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict] = {}
        self._usage: dict | None = None
        self._extra: dict[str, Any] = {}

    def feed(self, chunk: dict) -> None:
        for key in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(key) is not None:
                self._head.setdefault(key, chunk[key])
        if chunk.get("citations") is not None:
            self._extra["citations"] = chunk["citations"]
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for delta_choice in chunk.get("choices") or []:
            choice = self._choices.setdefault(
                delta_choice.get("index", 0),
                {"message": {"role": "assistant", "content": None}, "calls": {}, "finish_reason": None},
            )
            delta = delta_choice.get("delta") or {}
            message = choice["message"]
            for key in ("content", "refusal", "reasoning_content"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for call in delta.get("tool_calls") or []:
                joined = choice["calls"].setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                joined["id"] = call.get("id") or joined["id"]
                function = call.get("function") or {}
                joined["function"]["name"] += function.get("name") or ""
                joined["function"]["arguments"] += function.get("arguments") or ""
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]

    def completion(self) -> dict:
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            message = dict(choice["message"])
            if choice["calls"]:
                message["tool_calls"] = [choice["calls"][i] for i in sorted(choice["calls"])]
            choices.append({"index": index, "message": message, "finish_reason": choice["finish_reason"]})
        return {
            **self._head,
            "object": "chat.completion",
            "choices": choices,
            "usage": self._usage,
            **self._extra,
        }
