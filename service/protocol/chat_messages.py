"""The shape of a chat request's messages, checked as OpenAI checks it, before anything else reads them.

vLLM takes any role (a "wizard" message is rendered by the chat template as if it were one) and reports a
malformed message as the first member of its message union that failed ("messages.0.
ChatCompletionDeveloperMessageParam.role: Field required"); Ray Serve LLM's content check made a content
part of an unknown type a 500. Here each problem is named where it is, in OpenAI's words:
`messages[1].content[0].text`. Pure: no I/O, nothing heavy.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
PART_TYPES = {  # the content parts each role may carry, and the field that holds each part's value
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
}
UNSERVED_PARTS = ("input_audio", "audio", "file")  # OpenAI's, for models this service does not serve


class MessageFormatError(ValueError):
    """A message is malformed; `param` names where (`messages[0].content[1].text`), `code` says how."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def check_messages(messages: list[Any]) -> None:
    """Raise MessageFormatError for the first message that is not one OpenAI's chat API accepts."""
    for i, message in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _wrong_type(at, "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"{at}.role")
        if role == "function":
            raise MessageFormatError(
                f"{at}.role: the deprecated role 'function' is not supported: send a function's result as a "
                "'tool' message with the `tool_call_id` of the call it answers.",
                f"{at}.role",
            )
        if role not in ROLES:
            raise _not_one_of(f"{at}.role", role, ROLES)
        _check_content(message, role, at)
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise _wrong_type(f"{at}.name", "a string", name)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None:
                raise _missing(f"{at}.tool_call_id")
            if not isinstance(call_id, str):
                raise _wrong_type(f"{at}.tool_call_id", "a string", call_id)


def _check_content(message: dict, role: str, at: str) -> None:
    content = message.get("content")
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return
        raise _missing(f"{at}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _wrong_type(f"{at}.content", "a string or an array of content parts", content)
    if not content:
        raise MessageFormatError(
            f"Invalid '{at}.content': an empty array; give a string or at least one content part.",
            f"{at}.content",
            "empty_array",
        )
    for j, part in enumerate(content):
        _check_part(part, role, f"{at}.content[{j}]")


def _check_part(part: Any, role: str, at: str) -> None:
    if not isinstance(part, dict):
        raise _wrong_type(at, "an object", part)
    kind = part.get("type")
    if kind is None:
        raise _missing(f"{at}.type")
    allowed = PART_TYPES[role]
    if kind not in allowed:
        if kind == "image_url":
            raise MessageFormatError(f"{at}.type: images are only allowed in user messages.", f"{at}.type")
        if kind in UNSERVED_PARTS:
            kinds = " and ".join(f"'{t}'" for t in allowed)
            raise MessageFormatError(
                f"{at}.type: content parts of type '{kind}' are not supported here; a {role} message may "
                f"carry {kinds} parts.",
                f"{at}.type",
                "unsupported_value",
            )
        raise _not_one_of(f"{at}.type", kind, allowed)
    value = part.get(kind)
    if value is None:
        raise _missing(f"{at}.{kind}")
    if kind == "image_url":
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str):
            where = f"{at}.image_url.url" if isinstance(value, dict) else f"{at}.image_url"
            raise _wrong_type(where, "a string (a data URL or a file id)", url)
    elif not isinstance(value, str):
        raise _wrong_type(f"{at}.{kind}", "a string", value)


def _missing(param: str) -> MessageFormatError:
    return MessageFormatError(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _not_one_of(param: str, value: Any, allowed: tuple[str, ...]) -> MessageFormatError:
    supported = ", ".join(f"'{v}'" for v in allowed)
    return MessageFormatError(
        f"Invalid value for '{param}': {value!r}. Supported values are: {supported}.", param
    )


JSON_TYPES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}


def _wrong_type(param: str, expected: str, value: Any) -> MessageFormatError:
    got = "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)
    return MessageFormatError(
        f"Invalid type for '{param}': expected {expected}, but got {got}.", param, "invalid_type"
    )
