"""What a run's data source brings in, checked before the run is queued: its item rows (inline, from a file
or a suite), each item against the eval's schema, the prompt template, the sampling parameters. Each problem
is a 400 naming the item, the file line or the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from evals import metrics, suites, user_patterns
from evals.templates import references
from service.files.service import FileService
from service.inference.stored_completions import StoredChat
from service.platform.errors import ApiError
from service.platform.json_input import JsonInputError, parse_json
from service.protocol.evals import StoredCompletionsSource
from service.protocol.sampling import SamplingError, check_sampling

SAMPLING_PARAMS = {
    "temperature",
    "top_p",
    "seed",
    "max_completion_tokens",
    "max_tokens",
    "response_format",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


# The items of an eval of stored chat completions (data_source_config type `stored_completions`).
STORED_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "input": {"type": "array", "items": {"type": "object"}},
        "completion_id": {"type": "string"},
        "metadata": {"type": "object"},
        "tools": {"type": "array"},
    },
    "required": ["input", "completion_id"],
}


def read_rows(
    files: FileService,
    tenant: str,
    ds: Any,
    suite: suites.Suite | None,
    stored: Callable[[StoredCompletionsSource], list[StoredChat]],
) -> list[dict]:
    """The run's item rows: inline, from an uploaded file (purpose `evals`), the tenant's stored chat
    completions (`stored` finds them), or the eval's suite."""
    source = ds.source
    if source is None:
        if suite is None:
            raise ApiError(400, "data_source.source is required.", param="data_source.source")
        return suite.items()
    if source.type == "stored_completions":
        chats = stored(source)
        if not chats:
            raise ApiError(
                400,
                "No stored chat completions match data_source.source (chats are stored with store: true).",
                param="data_source.source",
            )
        return stored_rows(chats, with_samples=ds.type == "jsonl")
    if source.type == "file_content":
        return [_row(x, f"data_source.source.content[{i}]") for i, x in enumerate(source.content)]
    file = files.get(tenant, source.id, param="data_source.source.id", purpose="evals")
    rows = []
    text = files.read_bytes(file).decode("utf-8-sig", errors="replace")
    for n, line in enumerate(text.split("\n"), 1):  # JSONL's lines end at "\n" only (not at a raw U+2028)
        if not line.strip():
            continue
        try:
            value = parse_json(line)
        except JsonInputError as exc:
            raise ApiError(
                400, f"Invalid eval file: line {n}: {exc}", param="data_source.source.id"
            ) from None
        rows.append(_row(value, f"line {n}", param="data_source.source.id"))
    if not rows:
        raise ApiError(400, f"Invalid eval file: {file.id} has no items.", param="data_source.source.id")
    return rows


def stored_rows(chats: list[StoredChat], with_samples: bool) -> list[dict]:
    """Stored chats as item rows: the item is the request (`input`: its messages as sent, its tools) with
    the completion's id and metadata; the sample, if asked for, is the stored answer."""
    rows = []
    for chat in chats:
        tools = {"tools": chat.request["tools"]} if chat.request.get("tools") else {}
        item = {
            "input": chat.request["messages"],
            "completion_id": chat.id,
            "metadata": chat.metadata,
            **tools,
        }
        rows.append({"item": item, **({"sample": _stored_sample(chat.completion)} if with_samples else {})})
    return rows


def _stored_sample(completion: dict) -> dict:
    """A stored answer as a run's sample (what the graders read: `output_text`, `output_json`, ...)."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    text = message.get("content") or ""
    return {
        "model": completion.get("model"),
        "choices": choices,
        "output": [{"role": "assistant", "content": text}],
        "output_text": text,
        "output_json": metrics.parse_json(text)[0],
        "tool_calls": message.get("tool_calls") or [],
        "finish_reason": choices[0].get("finish_reason"),
        "usage": completion.get("usage"),
    }


def check_items(rows: list[dict], item_schema: dict, ds: Any) -> None:
    """Every item matches the eval's schema (and brings a sample where the source must): else a 400."""
    validator = user_patterns.schema_validator(item_schema)
    for i, row in enumerate(rows):
        error = next(iter(sorted(validator.iter_errors(row["item"]), key=lambda e: list(e.path))), None)
        where = "/".join(str(p) for p in error.absolute_path) if error else ""
        if error is not None:
            raise ApiError(
                400,
                f"Item {i} does not match the eval's item_schema: {where or '(item)'}: {error.message}",
                param=_source_param(ds, i),
                code="invalid_item",
            )
        if ds.type == "jsonl" and not isinstance(row.get("sample"), dict):
            raise ApiError(
                400,
                f"Item {i} has no sample: a jsonl data source brings its own.",
                param=_source_param(ds, i),
            )


def check_input_messages(messages: dict, item_schema: dict) -> None:
    """The prompt template names only fields the items have."""
    if messages["type"] == "item_reference":
        return
    fields = item_fields(item_schema)
    for i, m in enumerate(messages["template"]):
        if m.get("role") not in ("system", "developer", "user", "assistant"):
            raise ApiError(
                400,
                f"data_source.input_messages.template[{i}].role must be system, developer, user or assistant",
                param=f"data_source.input_messages.template[{i}].role",
            )
        content = m.get("content")
        texts = [content] if isinstance(content, str) else [json.dumps(content)]
        for ref in (r for t in texts for r in references(t)):
            namespace, _, rest = ref.partition(".")
            if namespace != "item" or (fields is not None and rest.split(".")[0] not in fields):
                raise ApiError(
                    400,
                    f"data_source.input_messages.template[{i}]: '{{{{{ref}}}}}' is not a field of the items",
                    param=f"data_source.input_messages.template[{i}].content",
                )


def item_fields(schema: dict) -> set[str] | None:
    """The item's top-level properties, when the schema lists them: templates may name only those."""
    props = schema.get("properties")
    return set(props) if isinstance(props, dict) and props else None


def _row(value: Any, where: str, param: str | None = None) -> dict:
    """An item row: `{"item": {...}, "sample"?: {...}}`; a plain object is taken as the item itself."""
    if not isinstance(value, dict):
        raise ApiError(400, f"{where}: an item must be a JSON object.", param=param or where)
    if isinstance(value.get("item"), dict):
        return {k: v for k, v in value.items() if k in ("item", "sample")}
    return {"item": value}


def _source_param(ds: Any, i: int) -> str:
    return (
        f"data_source.source.content[{i}]"
        if ds.source and ds.source.type == "file_content"
        else "data_source.source"
    )


def sampling_params(params: dict) -> dict:
    params = dict(params)
    if "max_completions_tokens" in params:  # the spelling of OpenAI's score_model sampling params
        params.setdefault("max_completion_tokens", params.pop("max_completions_tokens"))
    unknown = sorted(set(params) - SAMPLING_PARAMS)
    if unknown:
        raise ApiError(
            400,
            f"data_source.sampling_params: unknown field(s) {unknown}; use "
            f"{', '.join(sorted(SAMPLING_PARAMS))}",
            param="data_source.sampling_params",
        )
    try:
        check_sampling(params, "data_source.sampling_params")
    except SamplingError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None
    return params
