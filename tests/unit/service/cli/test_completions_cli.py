"""`tuneserve completions ...` as a user runs it (conftest.py: the API over real HTTP, an echoing engine):
stored chat completions listed, and exported as fine-tuning data the API accepts."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.cli.completions import training_example
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, auth


def _chat(port: int, text: str, **fields: object) -> dict:
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": text}], **fields}
    resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=auth(ADMIN))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_stored_completions_are_exported_as_fine_tuning_data(cli, port: int, tmp_path: Path) -> None:
    kept = [_chat(port, f"question {i}", store=True, metadata={"distill": "cli"}) for i in range(3)]
    _chat(port, "not for this export", store=True, metadata={"distill": "other"})
    _chat(port, "not stored")

    code, out, err = cli("completions", "list", "--metadata", "distill=cli")
    assert code == 0, err
    assert [c["id"] for c in json.loads(out)] == [c["id"] for c in kept]

    data = tmp_path / "distilled.jsonl"
    code, out, err = cli("completions", "export", "--metadata", "distill=cli", "-o", str(data), "--upload")
    assert code == 0, err
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    assert lines[1] == {
        "messages": [
            {"role": "user", "content": "question 1"},
            {"role": "assistant", "content": "1 messages, the last: question 1"},
        ]
    }
    assert len(lines) == 3 and "wrote 3 chats" in out
    uploaded = json.loads(out[out.index("{") :])  # the fine-tuning data checks passed
    assert uploaded["purpose"] == "fine-tune" and uploaded["filename"] == "distilled.jsonl"

    code, _, err = cli("completions", "export", "--metadata", "distill=none", "-o", str(tmp_path / "x.jsonl"))
    assert code == 1 and "no stored chat completions match" in err
    code, _, err = cli("completions", "list", "--metadata", "no-equals-sign")
    assert code == 1 and "KEY=VALUE" in err


def test_an_answer_cut_off_or_empty_teaches_nothing_and_parts_and_tools_come_back_as_sent() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,x"}},
    ]
    listed = [{"id": "c-0", "role": "user", "content": "a", "content_parts": parts}]
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "f"}}]

    def completion(message: dict, finish: str = "stop", **extra: object) -> dict:
        return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], **extra}

    called = completion(
        {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls", tools=tools
    )
    assert training_example(called, listed) == {
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "tool_calls": [call]}],
        "tools": tools,
    }
    assert training_example(completion({"role": "assistant", "content": "cut"}, "length"), listed) is None
    assert training_example(completion({"role": "assistant", "content": ""}), listed) is None
