"""The fine-tuning dataset format: JSONL, one example a line. Pure: no torch, usable by the API.

Two shapes, as OpenAI accepts them:
  {"messages": [{"role": "system"|"user"|"assistant", "content": "...", "weight": 0|1}, ...]}
  {"prompt": "...", "completion": "..."}
A chat example needs at least one assistant message with weight 1 (the default); `weight` is only
allowed on assistant messages. Loss is computed on assistant messages (or the completion) only.

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

ROLES = ("system", "user", "assistant")


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

    @property
    def images(self) -> list[str]:
        return [value for kind, value in self.parts if kind == IMAGE]


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
            raw = raw_bytes.decode("utf-8")
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
    if "messages" in obj:
        return _chat(obj, number, require_trainable, image_domains)
    if "prompt" in obj or "completion" in obj:
        return _prompt_completion(obj, number)
    raise DatasetError(number, 'expected {"messages": [...]} or {"prompt": ..., "completion": ...}')


def _chat(obj: dict, number: int, require_trainable: bool, image_domains: Collection[str]) -> Example:
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
        parts: tuple[tuple[str, str], ...] = ()
        if isinstance(content, list):  # OpenAI content parts
            parts = _parts(content, role, where, number, image_domains)
            content = "".join(value for kind, value in parts if kind == TEXT)
            if not any(kind == IMAGE for kind, _ in parts):
                parts = ()
        if not isinstance(content, str):
            raise DatasetError(number, f"{where}.content must be a string")
        if role == "assistant" and not content:
            raise DatasetError(number, f"{where}.content is empty")
        weight = m.get("weight", 1)
        if "weight" in m and role != "assistant":
            raise DatasetError(number, f"{where}.weight is only allowed on assistant messages")
        if weight not in (0, 1) or isinstance(weight, bool):
            raise DatasetError(number, f"{where}.weight must be 0 or 1, got {weight!r}")
        messages.append(Message(role, content, weight, parts))
    n_images = sum(len(m.images) for m in messages)
    if n_images > MAX_IMAGES_PER_EXAMPLE:
        raise DatasetError(number, f"{n_images} images; an example may have at most {MAX_IMAGES_PER_EXAMPLE}")
    if require_trainable and not any(m.role == "assistant" and m.weight == 1 for m in messages):
        raise DatasetError(number, "no assistant message with weight 1: nothing to learn from this example")
    return Example(number, tuple(messages))


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
