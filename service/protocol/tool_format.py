"""Tool calling: the checks of tool definitions and calls, and the text format that carries them into a
chat for a model whose chat template does not render tools itself (SmolLM2's does not).

One format for training and serving, so that what a model learns is exactly what it is later asked:
Hermes style, in Qwen2.5's words, which vLLM's `hermes` tool parser reads back from the model's output.

  system     <the system message, if any>

             # Tools
             ... <tools>
             {"type": "function", "function": {...}}       one line per tool
             </tools> ... how to call them
  assistant  <text, if any>
             <tool_call>
             {"name": "get_weather", "arguments": {"city": "Paris"}}
             </tool_call>                                 one block per call
  user       <tool_response>
             <the tool's result>
             </tool_response>                             one block per result; consecutive results: one turn

A model whose template renders `tools` itself (Qwen2.5, Llama 3.1, ...) gets the messages as they are, and
its template and its vLLM tool parser do the same job. Pure: no I/O, nothing heavy.
"""

from __future__ import annotations

import json
import re
from typing import Any

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOLS = 128

TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_INSTRUCTIONS = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call>"
)


class ToolFormatError(ValueError):
    """A tool definition, call or result is malformed; the message names where (`tools[0].function.name`)."""


def renders_tools(chat_template: str | None) -> bool:
    """Whether a chat template renders tool definitions itself (it reads the `tools` variable)."""
    return bool(chat_template) and re.search(r"\btools\b", chat_template) is not None


def uses_tools(messages: Any, tools: Any) -> bool:
    """Whether a chat request involves tools: definitions, or tool calls and results in its messages."""
    if tools:
        return True
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool") for m in messages
    )


def check_tools(tools: Any, where: str = "tools") -> list[dict]:
    """OpenAI's function tools, normalized: `{"type": "function", "function": {"name", "description"?,
    "parameters"?}}`; the parameters a valid JSON schema (Draft 2020-12), names unique."""
    if not isinstance(tools, list) or not tools:
        raise ToolFormatError(f"{where} must be a non-empty list of tools")
    if len(tools) > MAX_TOOLS:
        raise ToolFormatError(f"{where} has {len(tools)} tools; at most {MAX_TOOLS}")
    out, names = [], set()
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        if not isinstance(tool, dict):
            raise ToolFormatError(f"{at} must be an object")
        fn, name = _function(tool, at)
        if name in names:
            raise ToolFormatError(f"{at}.function.name {name!r} is defined twice")
        names.add(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise ToolFormatError(f"{at}.function.description must be a string")
        parameters = fn.get("parameters")
        if parameters is not None:
            _check_schema(parameters, f"{at}.function.parameters")
        clean = {"name": name}
        if description:
            clean["description"] = description
        if parameters is not None:
            clean["parameters"] = parameters
        out.append({"type": "function", "function": clean})
    return out


def _function(obj: dict, at: str) -> tuple[dict, str]:
    """A tool's or a call's `{"type": "function", "function": {"name": ...}}`: the function and its name."""
    if obj.get("type") != "function":
        raise ToolFormatError(f'{at}.type must be "function"')
    fn = obj.get("function")
    if not isinstance(fn, dict):
        raise ToolFormatError(f"{at}.function must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.match(name):
        raise ToolFormatError(f"{at}.function.name must be 1-64 letters, digits, _ or -, got {name!r}")
    return fn, name


def _check_schema(schema: Any, where: str) -> None:
    import jsonschema

    if not isinstance(schema, dict):
        raise ToolFormatError(f"{where} must be a JSON schema object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ToolFormatError(f"{where} is not a valid JSON schema: {exc.message}") from None


def check_tool_calls(calls: Any, where: str, known: set[str] | None) -> list[dict]:
    """An assistant message's `tool_calls`, normalized: `{"id", "type": "function", "function": {"name",
    "arguments"}}`, the arguments a JSON object in a string; names among `known` when tools are given."""
    if not isinstance(calls, list) or not calls:
        raise ToolFormatError(f"{where} must be a non-empty list")
    out = []
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise ToolFormatError(f"{at} must be an object")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ToolFormatError(f"{at}.id must be a non-empty string")
        fn, name = _function({"type": "function", **call}, at)
        if known is not None and name not in known:
            raise ToolFormatError(f"{at}.function.name {name!r} is not one of the example's tools")
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):
            raise ToolFormatError(f"{at}.function.arguments must be a string of JSON")
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ToolFormatError(f"{at}.function.arguments is not valid JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise ToolFormatError(f"{at}.function.arguments must be a JSON object")
        out.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return out


def tools_system_text(tools: list[dict], system: str = "") -> str:
    """The system message that presents `tools` (after the conversation's own system text, if any)."""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    head = f"{system}\n\n" if system else ""
    return f"{head}{TOOLS_PREAMBLE}{listed}{TOOLS_INSTRUCTIONS}"


def tool_call_text(call: dict) -> str:
    fn = call["function"]
    payload = {"name": fn["name"], "arguments": json.loads(fn["arguments"])}
    return f"<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>"


def as_text_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The conversation with tools, tool calls and tool results written as text (the format above), for a
    chat template that knows only system, user and assistant messages of text. Content that is a list of
    parts stays as it is (images); messages without tools and tool turns come back unchanged."""
    out: list[dict] = []
    if tools:
        first = messages[0] if messages else None
        if first is not None and first.get("role") == "system" and isinstance(first.get("content"), str):
            out.append({"role": "system", "content": tools_system_text(tools, first["content"])})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": tools_system_text(tools)})
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            text = m.get("content") or ""
            calls = "\n".join(tool_call_text(c) for c in m["tool_calls"])
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        elif role == "tool":
            block = f"<tool_response>\n{_text(m.get('content'))}\n</tool_response>"
            if out and out[-1].get("tool_responses"):
                out[-1]["content"] += f"\n{block}"
            else:
                out.append({"role": "user", "content": block, "tool_responses": True})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content")})
    return [{k: v for k, v in m.items() if k != "tool_responses"} for m in out]


def _text(content: Any) -> str:
    if isinstance(content, list):  # text parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
