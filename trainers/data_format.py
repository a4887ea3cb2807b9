"""The fine-tuning dataset format: JSONL, one example a line. Pure: no torch, usable by the API.

Three shapes, as OpenAI accepts them:
  {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "...", "weight": 0|1}, ...],
   "tools": [...], "parallel_tool_calls": true}                        supervised, chat
  {"prompt": "...", "completion": "..."}                                supervised, prompt and completion
  {"input": {"messages": [...], "tools": [...]}, "preferred_output": [{"role": "assistant", ...}],
   "non_preferred_output": [...]}                                       preference (DPO)
A chat example needs at least one assistant message with weight 1 (the default); `weight` is only
allowed on assistant messages. Loss is computed on assistant messages (or the completion) only.

Tools (OpenAI's function tools, checked by `service.protocol.tool_format`): an assistant message may carry
`tool_calls` (then its content may be empty) naming the example's tools, with JSON-object arguments; a
`tool` message answers an earlier call by its `tool_call_id`. Tool results are never trained on.
OpenAI's older, deprecated function-calling lines (`"functions"`, an assistant's `function_call`, a
`function` message answering it by name) are read as the same tools, calls and results.

Vision examples (OpenAI's vision fine-tuning format): a user message's content may be a list of parts,
`{"type": "text", "text": ...}` and `{"type": "image_url", "image_url": {"url": ...}}`, the url a data URL
the id of a file uploaded with purpose `vision`, or an http(s) URL on a domain the operator allows
(`service.platform.images` says what is accepted). Images in data URLs are decoded here; file ids are
resolved for their tenant, and URLs fetched (once, into files of the tenant), when a job is created.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from service.platform.images import MAX_IMAGES_PER_EXAMPLE, ImageError, check_image, classify, decode_data_url
from service.platform.json_input import JsonInputError, parse_json
from service.protocol.tool_format import ToolFormatError, check_tool_calls, check_tools

ROLES = ("system", "user", "assistant", "tool")


class DatasetError(ValueError):
    """A dataset line is malformed; `line` is 1-based."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.reason = message
        super().__init__(f"line {line}: {message}" if line else message)


TEXT, IMAGE = "text", "image"


@dataclass(frozen=True)
class Message:
    """`content` is the message's text; `parts` keeps text and images in their order, (TEXT, text) and
    (IMAGE, url), for a message that has images (empty otherwise)."""

    role: str
    content: str
    weight: int = 1
    parts: tuple[tuple[str, str], ...] = ()
    tool_calls: tuple[dict, ...] = ()  # an assistant's calls, OpenAI's shape (arguments a JSON string)
    tool_call_id: str | None = None  # a tool message: the call it answers

    @property
    def images(self) -> list[str]:
        return [value for kind, value in self.parts if kind == IMAGE]

    def as_openai(self) -> dict:
        """The message in OpenAI's shape (text content; images are the vision path's business)."""
        out: dict = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class Example:
    """One training example; `line` is where it came from, for error messages."""

    line: int
    messages: tuple[Message, ...] = field(default_factory=tuple)  # a preference example: its input
    prompt: str | None = None
    completion: str | None = None
    tools: tuple[dict, ...] = ()
    preferred: tuple[Message, ...] = ()  # a preference example's outputs (assistant messages)
    non_preferred: tuple[Message, ...] = ()

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)

    @property
    def is_preference(self) -> bool:
        return bool(self.preferred)

    @property
    def images(self) -> list[str]:
        """The image URLs or file ids of the example, in order."""
        return [url for m in self.messages for url in m.images]


def parse_jsonl(
    data: bytes | Iterable[bytes], *, require_trainable: bool = True, image_domains: Collection[str] = ()
) -> list[Example]:
    """Parse and validate a whole file (bytes, or an iterable of lines such as an open binary file);
    raises DatasetError naming the first bad line. Images may be http(s) URLs on `image_domains` only."""
    lines = data.splitlines() if isinstance(data, bytes) else data
    examples = []
    for number, raw_bytes in enumerate(lines, start=1):
        try:
            # "utf-8-sig" on the first line: editors on Windows (Notepad, PowerShell's `Out-File -Encoding
            # utf8`) start a UTF-8 file with a byte order mark, which JSON does not allow
            raw = raw_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DatasetError(number, "not valid UTF-8") from None
        if not raw.strip():
            continue
        examples.append(
            parse_line(raw, number, require_trainable=require_trainable, image_domains=image_domains)
        )
    if not examples:
        raise DatasetError(None, "the file has no examples (it is empty or only blank lines)")
    return examples


def parse_line(
    raw: str, number: int, *, require_trainable: bool = True, image_domains: Collection[str] = ()
) -> Example:
    try:
        obj = parse_json(raw)
    except JsonInputError as exc:
        raise DatasetError(number, str(exc)) from None
    if not isinstance(obj, dict):
        raise DatasetError(number, f"expected a JSON object, got {type(obj).__name__}")
    if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:
        return _preference(obj, number, image_domains)
    if "messages" in obj:
        return _chat(obj, number, require_trainable, image_domains)
    if "prompt" in obj or "completion" in obj:
        return _prompt_completion(obj, number)
    raise DatasetError(
        number,
        'expected {"messages": [...]}, {"prompt": ..., "completion": ...} or {"input": ..., '
        '"preferred_output": [...], "non_preferred_output": [...]}',
    )


@dataclass(frozen=True)
class _Tools:
    """An example's tools: their definitions and whether an assistant turn may call several at once."""

    definitions: tuple[dict, ...] = ()
    parallel: bool = True

    @classmethod
    def of(cls, obj: dict, number: int, where: str = "") -> _Tools:
        parallel = obj.get("parallel_tool_calls", True)
        if not isinstance(parallel, bool):
            raise DatasetError(number, f'"{where}parallel_tool_calls" must be true or false')
        if "tools" not in obj:
            return cls(parallel=parallel)
        try:
            return cls(tuple(check_tools(obj["tools"], f"{where}tools")), parallel)
        except ToolFormatError as exc:
            raise DatasetError(number, str(exc)) from None

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.definitions}


def _chat(obj: dict, number: int, require_trainable: bool, image_domains: Collection[str]) -> Example:
    obj = _from_functions(obj, number)
    unknown = set(obj) - {"messages", "tools", "parallel_tool_calls", "metadata"}
    if unknown:
        raise DatasetError(number, f"unknown key(s) {sorted(unknown)}")
    tools = _Tools.of(obj, number)
    messages = _messages(obj["messages"], "messages", number, image_domains, tools)
    if require_trainable and not any(m.role == "assistant" and m.weight == 1 for m in messages):
        raise DatasetError(number, "no assistant message with weight 1: nothing to learn from this example")
    return Example(number, messages, tools=tools.definitions)


def _preference(obj: dict, number: int, image_domains: Collection[str]) -> Example:
    """OpenAI's preference (DPO) line: a conversation and two ways to answer it."""
    unknown = set(obj) - {"input", "preferred_output", "non_preferred_output", "metadata"}
    if unknown:
        raise DatasetError(number, f"unknown key(s) {sorted(unknown)}")
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in obj:
            raise DatasetError(
                number,
                f'"{key}" is missing: a preference example needs input, '
                "preferred_output and non_preferred_output",
            )
    source = obj["input"]
    if not isinstance(source, dict) or "messages" not in source:
        raise DatasetError(number, '"input" must be an object with "messages"')
    unknown = set(source) - {"messages", "tools", "parallel_tool_calls"}
    if unknown:
        raise DatasetError(number, f"unknown key(s) in input: {sorted(unknown)}")
    tools = _Tools.of(source, number, "input.")
    messages = _messages(source["messages"], "input.messages", number, image_domains, tools)
    if messages[-1].role == "assistant":
        raise DatasetError(number, "input.messages ends with an assistant message; the outputs answer it")
    outputs = []
    for key in ("preferred_output", "non_preferred_output"):
        # The outputs continue the input: a call in them may name the input's tools.
        answer = _messages(obj[key], key, number, image_domains, tools, pending=_open_calls(messages))
        if any(m.role != "assistant" for m in answer):
            raise DatasetError(number, f"{key} may only hold assistant messages")
        outputs.append(answer)
    if outputs[0] == outputs[1]:
        raise DatasetError(number, "preferred_output and non_preferred_output are the same")
    return Example(number, messages, tools=tools.definitions, preferred=outputs[0], non_preferred=outputs[1])


def _from_functions(obj: dict, number: int) -> dict:
    """A line in OpenAI's deprecated function-calling format, rewritten with tools: `"functions": [{"name",
    ...}]` become the tools, an assistant's `"function_call": {"name", "arguments"}` a tool call with an
    id of its own (one call a turn: that format had no parallel calls), and a `{"role": "function",
    "name", "content"}` message the tool result answering the latest open call of that name. Message
    positions are kept, so errors name the line's own messages. Other lines come back as they are."""
    messages = obj.get("messages")
    legacy = isinstance(messages, list) and any(
        isinstance(m, dict) and ("function_call" in m or m.get("role") == "function") for m in messages
    )
    if "functions" not in obj and not legacy:
        return obj
    if "tools" in obj:
        raise DatasetError(number, '"functions" (deprecated) and "tools" cannot both be given: use "tools"')
    if "functions" not in obj:
        raise DatasetError(number, 'function_call needs the example\'s "functions" (the functions it calls)')
    out = {key: value for key, value in obj.items() if key != "functions"}
    out["tools"] = _functions_as_tools(obj["functions"], number)
    if isinstance(messages, list):
        out["messages"] = _function_turns_as_tool_turns(messages, number)
    return out


def _functions_as_tools(functions: object, number: int) -> list[dict]:
    if not isinstance(functions, list) or not all(isinstance(fn, dict) for fn in functions):
        raise DatasetError(number, '"functions" must be a non-empty list of function objects')
    try:
        return check_tools([{"type": "function", "function": fn} for fn in functions], "functions")
    except ToolFormatError as exc:  # "functions[0].function.name": drop the wrapper the user did not write
        raise DatasetError(number, str(exc).replace(".function.", ".", 1)) from None


def _function_turns_as_tool_turns(messages: list, number: int) -> list:
    open_calls: list[tuple[str, str]] = []  # (id, function name), oldest first
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, dict) and "function_call" in m:
            call = m["function_call"]
            if "tool_calls" in m:
                raise DatasetError(number, f"messages[{i}] has both function_call and tool_calls")
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise DatasetError(
                    number, f'messages[{i}].function_call must be {{"name": ..., "arguments": ...}}'
                )
            open_calls.append((f"call_{i}", call["name"]))
            m = {key: value for key, value in m.items() if key != "function_call"}
            m["tool_calls"] = [{"id": open_calls[-1][0], "type": "function", "function": call}]
        elif isinstance(m, dict) and m.get("role") == "function":
            name = m.get("name")
            answered = next((c for c in reversed(open_calls) if c[1] == name), None)
            if answered is None:
                raise DatasetError(
                    number, f"messages[{i}] answers function {name!r}, which no earlier function_call called"
                )
            open_calls.remove(answered)
            m = {key: value for key, value in m.items() if key != "name"}
            m.update(role="tool", tool_call_id=answered[0])
        out.append(m)
    return out


def _open_calls(messages: tuple[Message, ...]) -> set[str]:
    calls = {c["id"] for m in messages for c in m.tool_calls}
    return calls - {m.tool_call_id for m in messages if m.tool_call_id}


def _messages(
    raw_messages: object,
    key: str,
    number: int,
    image_domains: Collection[str],
    tools: _Tools,
    pending: set[str] | None = None,
) -> tuple[Message, ...]:
    if not isinstance(raw_messages, list) or not raw_messages:
        raise DatasetError(number, f'"{key}" must be a non-empty list')
    pending = set(pending or ())  # ids of tool calls not answered yet
    messages = []
    for i, m in enumerate(raw_messages):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise DatasetError(number, f"{where} must be an object")
        role = m.get("role")
        if role not in ROLES:
            raise DatasetError(number, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        content = m.get("content")
        parts: tuple[tuple[str, str], ...] = ()
        if isinstance(content, list):  # OpenAI content parts
            parts = _parts(content, role, where, number, image_domains)
            content = "".join(value for kind, value in parts if kind == TEXT)
            if not any(kind == IMAGE for kind, _ in parts):
                parts = ()
        calls = _tool_calls(m, where, number, tools) if role == "assistant" else ()
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise DatasetError(number, f"{where}.content must be a string")
        if role == "assistant" and not content and not calls:
            raise DatasetError(number, f"{where}.content is empty")
        weight = m.get("weight", 1)
        if "weight" in m and role != "assistant":
            raise DatasetError(number, f"{where}.weight is only allowed on assistant messages")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise DatasetError(number, f"{where}.weight must be 0 or 1, got {weight!r}")
        call_id = None
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in pending:
                raise DatasetError(
                    number, f"{where}.tool_call_id {call_id!r} answers no earlier tool call of the example"
                )
            pending.discard(call_id)
        elif "tool_call_id" in m:
            raise DatasetError(number, f"{where}.tool_call_id is only allowed on tool messages")
        pending |= {c["id"] for c in calls}
        messages.append(Message(role, content, weight, parts, calls, call_id))
    n_images = sum(len(m.images) for m in messages)
    if n_images > MAX_IMAGES_PER_EXAMPLE:
        raise DatasetError(number, f"{n_images} images; an example may have at most {MAX_IMAGES_PER_EXAMPLE}")
    return tuple(messages)


def _tool_calls(m: dict, where: str, number: int, tools: _Tools) -> tuple[dict, ...]:
    if "tool_calls" not in m:
        return ()
    if not tools.definitions:
        raise DatasetError(
            number, f'{where}.tool_calls needs the example\'s "tools" (the functions it calls)'
        )
    try:
        calls = check_tool_calls(m["tool_calls"], f"{where}.tool_calls", tools.names)
    except ToolFormatError as exc:
        raise DatasetError(number, str(exc)) from None
    if len(calls) > 1 and not tools.parallel:
        raise DatasetError(
            number, f"{where}.tool_calls has {len(calls)} calls but parallel_tool_calls is false"
        )
    return tuple(calls)


def _parts(
    content: list, role: str, where: str, number: int, image_domains: Collection[str]
) -> tuple[tuple[str, str], ...]:
    """A message's content parts as (TEXT, text) and (IMAGE, url); images only in user messages, and a
    data URL's image must decode."""
    parts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise DatasetError(number, f"{at}.text must be a string")
            parts.append((TEXT, part["text"]))
        elif kind == "image_url":
            if role != "user":
                raise DatasetError(number, f"{at}: images are only allowed in user messages, not {role}")
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else None
            try:
                if classify(url, image_domains) == "data":
                    check_image(decode_data_url(url))
            except ImageError as exc:
                raise DatasetError(number, f"{at}.image_url: {exc}") from None
            parts.append((IMAGE, url))
        else:
            raise DatasetError(number, f"{at}.type must be 'text' or 'image_url', got {kind!r}")
    return tuple(parts)


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
