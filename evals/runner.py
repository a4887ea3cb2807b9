"""One batch of a run's items, evaluated where Ray puts it: sample each item from the run's model through
the service's API (unless the graders need no sample), grade it, and return the output items.

A model error on one item marks that item `error` and the others go on; nothing here touches the database
(the API process, the single writer, stores what comes back).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evals.client import ApiScorer, ModelCallError
from evals.graders import GRADERS, GradingError, Scorer
from evals.metrics import parse_json
from evals.templates import TemplateError, lookup, render_messages


@dataclass
class RunSpec:
    """Everything a batch needs, picklable for Ray."""

    api_url: str
    api_key: str
    model: str
    tokenizer_path: str
    testing_criteria: list[dict]
    # The data source: "completions" samples the model; "jsonl" items bring their own sample.
    source_type: str = "completions"
    input_messages: dict | None = None
    sampling_params: dict = field(default_factory=dict)
    retrieval: dict | None = None
    concurrency: int = 4
    embedding: tuple[str | None, str] = (None, "auto")


def evaluate_batch(spec: RunSpec, rows: list[tuple[int, dict]]) -> list[dict]:
    """Output items (without ids) for `rows` of (index, {"item": ..., "sample"?: ...})."""
    scorer = ApiScorer(spec.api_url, spec.api_key, spec.model, spec.tokenizer_path, spec.embedding)
    graders = GRADERS.validate_python(spec.testing_criteria)
    try:
        with ThreadPoolExecutor(max(1, spec.concurrency)) as pool:
            return list(pool.map(lambda row: evaluate_item(spec, graders, scorer, *row), rows))
    finally:
        scorer.close()


def evaluate_item(spec: RunSpec, graders: list, scorer: Scorer, index: int, row: dict) -> dict:
    item = row["item"]
    sample, error = None, None
    if spec.source_type == "jsonl":
        sample = row.get("sample") or {}
    elif any(g.needs_sample for g in graders):
        try:
            sample = draw_sample(spec, scorer, item)
        except (ModelCallError, TemplateError) as exc:
            error = _error(exc)
            sample = {"error": error, "model": spec.model, "output": []}
    results = []
    if error is None:
        for grader in graders:
            try:
                results.append(grader.grade(item, sample, scorer))
            except (GradingError, ModelCallError, ValueError) as exc:
                error = error or _error(exc)
                results.append(
                    {
                        "name": grader.name,
                        "type": grader.type,
                        "score": 0.0,
                        "passed": False,
                        "error": str(exc),
                        "sample": getattr(exc, "sample", None),
                    }
                )
    status = "error" if error else "pass" if all(r["passed"] for r in results) else "fail"
    return {
        "datasource_item_id": index,
        "datasource_item": item,
        "sample": sample or {"model": spec.model, "input": [], "output": [], "error": None},
        "results": results,
        "status": status,
    }


def draw_sample(spec: RunSpec, scorer: Any, item: dict) -> dict:
    messages = input_messages(spec.input_messages, item)
    body = {"model": spec.model, "messages": messages, **spec.sampling_params}
    if spec.retrieval:
        body["retrieval"] = spec.retrieval
    out = scorer.complete_chat(body)
    choice = out["choices"][0]
    text = choice["message"].get("content") or ""
    tool_calls = choice["message"].get("tool_calls") or []
    return {
        "input": messages,
        "output": [
            {"role": "assistant", "content": text, **({"tool_calls": tool_calls} if tool_calls else {})}
        ],
        "output_text": text,
        "tool_calls": tool_calls,
        "output_json": parse_json(text)[0],
        "choices": out["choices"],
        "citations": out.get("citations"),
        "finish_reason": choice.get("finish_reason"),
        "model": spec.model,
        "usage": out.get("usage"),
        "error": None,
        "temperature": spec.sampling_params.get("temperature"),
        "max_completion_tokens": spec.sampling_params.get("max_completion_tokens"),
        "top_p": spec.sampling_params.get("top_p"),
        "seed": spec.sampling_params.get("seed"),
    }


def input_messages(config: dict | None, item: dict) -> list[dict]:
    """The run's `input_messages` for one item: a template rendered with it, or an item_reference."""
    if config is None:
        raise TemplateError("the data source has no input_messages to sample the model with")
    if config["type"] == "item_reference":
        messages = lookup(config["item_reference"], {"item": item})
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return messages
    return render_messages(config["template"], {"item": item})


def _error(exc: Exception) -> dict:
    code = (
        exc.code
        if isinstance(exc, ModelCallError)
        else "grading_error"
        if isinstance(exc, GradingError)
        else "invalid_item"
    )
    return {"code": code, "message": str(exc)}
