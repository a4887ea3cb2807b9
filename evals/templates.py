"""OpenAI's eval templates: `{{item.question}}`, `{{sample.output_text}}`, nested paths `{{item.a.b}}`.

A string that is exactly one reference renders to the referenced value itself (a list of choices stays a
list); otherwise every reference is replaced by its text (non-strings as JSON).
"""

from __future__ import annotations

import json
import re
from typing import Any

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][\w]*(?:\.[\w]+)*)\s*\}\}")
NAMESPACES = ("item", "sample")


class TemplateError(ValueError):
    """A template names something its context does not have."""


def references(template: str) -> list[str]:
    """The dotted paths a template refers to, e.g. ['item.question']."""
    return REFERENCE.findall(template)


def lookup(path: str, context: dict[str, Any]) -> Any:
    value: Any = context
    for i, part in enumerate(path.split(".")):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(
                f"'{{{{{path}}}}}' refers to '{'.'.join(path.split('.')[: i + 1])}', which is missing"
            )
    return value


def render(template: str, context: dict[str, Any]) -> Any:
    whole = REFERENCE.fullmatch(template.strip())
    if whole:
        return lookup(whole.group(1), context)
    return REFERENCE.sub(lambda m: _text(lookup(m.group(1), context)), template)


def render_messages(messages: list[dict[str, Any]], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Chat messages with every string content rendered (text parts of list contents too)."""
    return [{**m, "content": _render_content(m.get("content", ""), context)} for m in messages]


def _render_content(content: Any, context: dict[str, Any]) -> Any:
    if isinstance(content, str):
        return _text(render(content, context))
    if isinstance(content, list):
        return [_render_part(part, context) for part in content]
    return content


def _render_part(part: Any, context: dict[str, Any]) -> Any:
    if not isinstance(part, dict):
        return part
    out = dict(part)
    for key in ("text", "image_url"):
        if isinstance(out.get(key), str):
            out[key] = _text(render(out[key], context))
    if isinstance(out.get("image_url"), dict) and isinstance(out["image_url"].get("url"), str):
        out["image_url"] = {**out["image_url"], "url": _text(render(out["image_url"]["url"], context))}
    # OpenAI's eval inputs use input_text / input_image; the chat API wants text / image_url.
    if out.get("type") in ("input_text", "output_text"):
        out["type"] = "text"
    if out.get("type") == "input_image":
        out = {"type": "image_url", "image_url": {"url": out["image_url"]}}
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
