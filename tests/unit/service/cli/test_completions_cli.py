"""`tuneserve completions ...` as a user runs it (conftest.py: the API over real HTTP, an echoing engine):
stored chat completions listed, and exported as a fine-tuning file (`POST /v1/chat/completions/export`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from service.inference.stored_completions import StoredChat, training_example
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
    code, out, err = cli(
        "completions", "export", "--metadata", "distill=cli", "--filename", "distilled.jsonl", "-o", str(data)
    )
    assert code == 0, err
    lines = [json.loads(line) for line in data.read_text().splitlines()]
    assert lines[1] == {
        "messages": [
            {"role": "user", "content": "question 1"},
            {"role": "assistant", "content": "1 messages, the last: question 1"},
        ]
    }
    made = json.loads(out[out.index("{") :])
    assert (made["exported"], made["skipped"], made["filename"]) == (3, 0, "distilled.jsonl")
    file = httpx.get(f"http://127.0.0.1:{port}/v1/files/{made['file_id']}", headers=auth(ADMIN)).json()
    assert file["purpose"] == "fine-tune" and file["bytes"] == len(data.read_bytes())

    code, _, err = cli("completions", "export", "--metadata", "distill=none")
    assert code == 1 and "none matches" in err
    code, _, err = cli("completions", "list", "--metadata", "no-equals-sign")
    assert code == 1 and "KEY=VALUE" in err


def test_an_answer_cut_off_or_empty_teaches_nothing_and_parts_and_tools_stay_as_sent() -> None:
    parts = [
        {"type": "text", "text": "a"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,x"}},
    ]
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tools = [{"type": "function", "function": {"name": "f"}}]
    request = {"messages": [{"role": "user", "content": parts}], "tools": tools}

    def chat(message: dict, finish: str = "stop") -> StoredChat:
        completion = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
        return StoredChat("c", request, completion, {})

    assert training_example(
        chat({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    ) == {
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "tool_calls": [call]}],
        "tools": tools,
    }
    assert training_example(chat({"role": "assistant", "content": "cut"}, "length")) is None
    assert training_example(chat({"role": "assistant", "content": ""})) is None
