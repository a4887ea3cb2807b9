"""The fine-tuning dataset format: JSONL, one example a line. Pure: no torch, usable by the API.

Two shapes, as OpenAI accepts them:
  {"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight": 0|1}, ...]}
  {"prompt": "...", "completion": "..."}
A chat example needs at least one assistant message with weight 1 (the default); `weight` is only
allowed on assistant messages. Loss is computed on assistant messages (or the completion) only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from service.platform.json_input import JsonInputError, parse_json

ROLES = ("system", "user", "assistant")


class DatasetError(ValueError):
    """A dataset line is malformed; `line` is 1-based."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line else message)


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    weight: int = 1


@dataclass(frozen=True)
class Example:
    """One training example; `line` is where it came from, for error messages."""

    line: int
    messages: tuple[Message, ...] = field(default_factory=tuple)
    prompt: str | None = None
    completion: str | None = None

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


def parse_jsonl(data: bytes | Iterable[bytes], *, require_trainable: bool = True) -> list[Example]:
    """Parse and validate a whole file (bytes, or an iterable of lines such as an open binary file);
    raises DatasetError naming the first bad line."""
    lines = data.splitlines() if isinstance(data, bytes) else data
    examples = []
    for number, raw_bytes in enumerate(lines, start=1):
        try:
            raw = raw_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(number, "not valid UTF-8") from None
        if not raw.strip():
            continue
        examples.append(parse_line(raw, number, require_trainable=require_trainable))
    if not examples:
        raise DatasetError(None, "the file has no examples (it is empty or only blank lines)")
    return examples


def parse_line(raw: str, number: int, *, require_trainable: bool = True) -> Example:
    try:
        obj = parse_json(raw)
    except JsonInputError as exc:
        raise DatasetError(number, str(exc)) from None
    if not isinstance(obj, dict):
        raise DatasetError(number, f"expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        return _chat(obj, number, require_trainable)
    if "prompt" in obj or "completion" in obj:
        return _prompt_completion(obj, number)
    raise DatasetError(number, 'expected {"messages": [...]} or {"prompt": ..., "completion": ...}')


def _chat(obj: dict, number: int, require_trainable: bool) -> Example:
    unknown = set(obj) - {"messages", "tools", "parallel_tool_calls", "metadata"}
    if unknown:
        raise DatasetError(number, f"unknown key(s) {sorted(unknown)}")
    raw_messages = obj["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise DatasetError(number, '"messages" must be a non-empty list')
    messages = []
    for i, m in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise DatasetError(number, f"{where} must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise DatasetError(number, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: text only here
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise DatasetError(number, f"{where}.content parts must all be of type 'text'")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise DatasetError(number, f"{where}.content must be a string")
        if role == "assistant" and not content:
            raise DatasetError(number, f"{where}.content is empty")
        weight = m.get("weight", 1)
        if "weight" in m and role != "assistant":
            raise DatasetError(number, f"{where}.weight is only allowed on assistant messages")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise DatasetError(number, f"{where}.weight must be 0 or 1, got {weight!r}")
        messages.append(Message(role, content, weight))
    if require_trainable and not any(m.role == "assistant" and m.weight == 1 for m in messages):
        raise DatasetError(number, "no assistant message with weight 1: nothing to learn from this example")
    return Example(number, tuple(messages))


def _prompt_completion(obj: dict, number: int) -> Example:
    unknown = set(obj) - {"prompt", "completion"}
    if unknown:
        raise DatasetError(number, f"unknown key(s) {sorted(unknown)}")
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str):
        raise DatasetError(number, '"prompt" must be a string')
    if not isinstance(completion, str) or not completion:
        raise DatasetError(number, '"completion" must be a non-empty string')
    return Example(number, prompt=prompt, completion=completion)
