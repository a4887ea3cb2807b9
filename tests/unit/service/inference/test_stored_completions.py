"""Stored chat completions: `store: true` keeps the request (as the client sent it) and the answer (a
streamed one as its chunks add up); they are listed by model and metadata, read back with their messages,
their metadata changed, deleted, expired, counted in the storage limit, and never another tenant's."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.streams import kept_at_end
from service.platform.auth import ADMIN_TENANT
from service.platform.settings import DEFAULT_BASE_MODEL
from service.protocol.chat_stream import ChatAssembly, SseEvents
from tests.helpers import ADMIN, USAGE, EchoEngine, MemoryStore, assert_openai_error, auth, offline_settings
from tests.unit.service.models.test_imports import MODELS

CHAT = "/v1/chat/completions"


def _chat(client: TestClient, text: str, headers: dict | None = None, **fields: object) -> dict:
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": text}], **fields}
    resp = client.post(CHAT, json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_stored_completion_is_listed_by_metadata_read_back_updated_and_deleted(stack) -> None:
    client, engine = stack
    _chat(client, "not kept")
    first = _chat(client, "Hello", store=True, metadata={"task": "greet", "run": "1"})
    second = _chat(client, "Bye", store=True, metadata={"task": "part"})
    assert "store" not in engine.calls[-1][2] and "metadata" not in engine.calls[-1][2]  # the service's own

    listed = client.get(CHAT).json()
    assert [c["id"] for c in listed["data"]] == [first["id"], second["id"]]  # oldest first; unstored absent
    assert listed["first_id"] == first["id"] and listed["has_more"] is False
    assert client.get(CHAT, params={"metadata[task]": "greet"}).json()["data"] == [
        {**first, "metadata": {"task": "greet", "run": "1"}}
    ]
    assert client.get(CHAT, params={"metadata[task]": "greet", "metadata[run]": "2"}).json()["data"] == []
    assert [c["id"] for c in client.get(CHAT, params={"model": "other"}).json()["data"]] == []
    page = client.get(CHAT, params={"limit": 1, "order": "desc"}).json()
    assert [c["id"] for c in page["data"]] == [second["id"]] and page["has_more"] is True
    after = client.get(CHAT, params={"limit": 1, "order": "desc", "after": second["id"]}).json()
    assert [c["id"] for c in after["data"]] == [first["id"]]
    assert_openai_error(client.get(CHAT, params={"metadata[": "x"}), 400, "invalid_value")

    stored = client.get(f"{CHAT}/{first['id']}").json()
    assert stored["choices"] == first["choices"] and stored["usage"] == first["usage"]
    messages = client.get(f"{CHAT}/{first['id']}/messages").json()["data"]
    assert messages == [{"id": f"{first['id']}-0", "role": "user", "content": "Hello", "content_parts": None}]

    updated = client.post(f"{CHAT}/{first['id']}", json={"metadata": {"task": "reviewed"}}).json()
    assert updated["metadata"] == {"task": "reviewed"}
    assert client.get(CHAT, params={"metadata[task]": "greet"}).json()["data"] == []
    assert_openai_error(client.post(f"{CHAT}/{first['id']}", json={"model": "x"}), 400)  # only metadata

    gone = client.delete(f"{CHAT}/{first['id']}").json()
    assert gone == {"object": "chat.completion.deleted", "id": first["id"], "deleted": True}
    assert_openai_error(client.get(f"{CHAT}/{first['id']}"), 404, "chat_completion_not_found")
    assert [c["id"] for c in client.get(CHAT).json()["data"]] == [second["id"]]


def test_a_streamed_completion_is_stored_as_its_chunks_add_up(stack) -> None:
    client, _ = stack
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    with client.stream("POST", CHAT, json={**body, "store": True}) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert all(
        e["choices"] for e in events
    )  # the usage chunk, not asked for, stays out of the client's stream
    [stored] = client.get(CHAT).json()["data"]
    assert stored["id"] == events[0]["id"] and stored["model"] == DEFAULT_BASE_MODEL
    assert stored["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "1 messages, the last: Hi"},
            "finish_reason": "stop",
        }
    ]
    assert stored["usage"] == USAGE  # kept from the usage chunk the client did not see


def test_a_stream_is_kept_before_its_done_goes_out_and_a_failed_one_not_at_all() -> None:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]}
    error = {"error": {"message": "engine died", "type": "server_error", "param": None, "code": None}}

    async def stream(*events: dict):
        for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    async def run(source) -> list[tuple[str, int]]:
        kept: list[dict] = []

        async def keep(completion: dict) -> None:
            kept.append(completion)

        return [(packet, len(kept)) async for packet in kept_at_end(source, keep)]

    seen = asyncio.run(run(stream(chunk)))
    assert seen[-1] == ("data: [DONE]\n\n", 1) and seen[0][1] == 0  # kept before [DONE] went out
    assert asyncio.run(run(stream(chunk, error)))[-1][1] == 0


def test_the_stored_request_is_what_the_client_sent_with_its_tools(stack) -> None:
    client, engine = stack
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Call "}, {"type": "text", "text": "f"}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    resp = client.post(
        CHAT, json={"model": DEFAULT_BASE_MODEL, "messages": messages, "tools": [tool], "store": True}
    )
    completion = resp.json()
    assert engine.calls[-1][2]["messages"] != messages  # the engine got the tools written as text
    assert client.get(f"{CHAT}/{completion['id']}").json()["tools"] == [tool]
    stored = client.get(f"{CHAT}/{completion['id']}/messages", params={"limit": 2}).json()
    assert stored["has_more"] is True
    assert stored["data"][0] == {
        **messages[0],
        "id": f"{completion['id']}-0",
        "content": "Call f",
        "content_parts": messages[0]["content"],
    }
    assert stored["data"][1] == {**messages[1], "id": f"{completion['id']}-1", "content_parts": None}
    rest = client.get(f"{CHAT}/{completion['id']}/messages", params={"after": stored["last_id"]}).json()
    assert [m["role"] for m in rest["data"]] == ["tool"] and rest["has_more"] is False


def test_another_tenants_stored_completions_do_not_exist(stack) -> None:
    client, _ = stack
    mine = _chat(client, "secret", store=True)
    other = auth(client.post("/v1/admin/api_keys", json={"tenant": "acme"}).json()["key"])
    assert client.get(CHAT, headers=other).json()["data"] == []
    for method, path, body in (
        ("GET", f"{CHAT}/{mine['id']}", None),
        ("GET", f"{CHAT}/{mine['id']}/messages", None),
        ("POST", f"{CHAT}/{mine['id']}", {"metadata": {}}),
        ("DELETE", f"{CHAT}/{mine['id']}", None),
    ):
        assert_openai_error(
            client.request(method, path, json=body, headers=other), 404, "chat_completion_not_found"
        )
    assert client.get(f"{CHAT}/{mine['id']}").status_code == 200


def test_storing_past_the_storage_limit_is_refused_before_anything_is_generated(stack) -> None:
    client, engine = stack
    key = auth(client.post("/v1/admin/api_keys", json={"tenant": "small"}).json()["key"])
    client.post("/v1/admin/tenants/small/limits", json={"storage_bytes": 300})
    _chat(client, "x" * 10, headers=key, store=True)
    calls = len(engine.calls)
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "y" * 400}], "store": True}
    assert_openai_error(client.post(CHAT, json=body, headers=key), 429)
    assert len(engine.calls) == calls
    assert _chat(client, "y" * 400, headers=key)["choices"]  # not stored: never refused for storage


def test_metadata_is_limited_as_at_openai(stack) -> None:
    client, _ = stack
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "x"}], "store": True}
    too_many = {f"k{i}": "v" for i in range(17)}
    assert_openai_error(client.post(CHAT, json={**body, "metadata": too_many}), 400)
    assert_openai_error(client.post(CHAT, json={**body, "metadata": {"k": "v" * 513}}), 400)


def test_stored_completions_expire_after_the_retention(stack) -> None:
    client, _ = stack
    _chat(client, "old", store=True)
    completions = client.app.state.services.completions
    assert completions.expire(now=time.time()) == 0
    assert completions.expire(now=time.time() + completions.retention_s + 1) == 1
    assert client.get(CHAT).json()["data"] == []


def test_chunks_add_up_to_choices_with_text_and_tool_calls() -> None:
    chunks = [
        {
            "id": "c1",
            "model": "m",
            "created": 5,
            "choices": [{"index": 1, "delta": {"role": "assistant", "content": "B"}}],
        },
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_a", "function": {"name": "get", "arguments": '{"x"'}}
                        ]
                    },
                }
            ],
        },
        {
            "id": "c1",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
        {"id": "c1", "choices": [{"index": 1, "delta": {"content": "ye"}, "finish_reason": "stop"}]},
        {"id": "c1", "choices": [], "usage": USAGE},
    ]
    packets = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ": keep-alive\n\ndata: [DONE]\n\n"
    call = {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"x": 1}'}}
    expected = {
        "id": "c1",
        "created": 5,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            },
            {"index": 1, "message": {"role": "assistant", "content": "Bye"}, "finish_reason": "stop"},
        ],
        "usage": USAGE,
    }
    for cut in (0, 37, 180, len(packets) - 3):  # an event may be cut across two packets
        events, assembly = SseEvents(), ChatAssembly()
        for packet in (packets[:cut], packets[cut:]):
            for chunk in events.feed(packet):
                assembly.feed(chunk)
        assert assembly.completion() == expected, cut


def test_stored_chats_are_exported_as_a_fine_tuning_file_without_cut_off_answers(stack) -> None:
    client, _ = stack
    kept = _chat(client, "Hello", store=True, metadata={"set": "a"})
    cut = {**kept, "id": "chatcmpl-cut", "choices": [{**kept["choices"][0], "finish_reason": "length"}]}
    request = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "Long"}]}
    client.app.state.services.completions.save(ADMIN_TENANT, request, {"set": "a"}, cut)
    made = client.post(f"{CHAT}/export", json={"metadata": {"set": "a"}, "filename": "a.jsonl"}).json()
    assert (made["exported"], made["skipped"], made["filename"]) == (1, 1, "a.jsonl")
    [line] = client.get(f"/v1/files/{made['file_id']}/content").text.splitlines()
    assert json.loads(line) == {
        "messages": [{"role": "user", "content": "Hello"}, kept["choices"][0]["message"]]
    }
    assert client.get(f"/v1/files/{made['file_id']}").json()["purpose"] == "fine-tune"
    refused = client.post(f"{CHAT}/export", json={"metadata": {"set": "none"}})
    assert "none matches" in assert_openai_error(refused, 400, "no_training_data")["message"]
    other = auth(client.post("/v1/admin/api_keys", json={"tenant": "acme"}).json()["key"])
    assert_openai_error(client.post(f"{CHAT}/export", json={}, headers=other), 400, "no_training_data")


def test_an_exported_file_is_accepted_as_training_data_tool_calls_included(tmp_path: Path) -> None:
    engine = EchoEngine({DEFAULT_BASE_MODEL})
    app = create_app(offline_settings(tmp_path, models_dir=MODELS), store=MemoryStore(), engine=engine)
    tool = {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    with TestClient(app, headers=auth(ADMIN)) as client:
        for i in range(4):
            _chat(client, f"question {i}", store=True, metadata={"set": "train"})
        called = _chat(client, "Weather?", store=True, tools=[tool])
        answer = {"role": "assistant", "content": None, "tool_calls": [call]}
        completion = {**called, "choices": [{"index": 0, "message": answer, "finish_reason": "tool_calls"}]}
        request = {
            "model": DEFAULT_BASE_MODEL,
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [tool],
        }
        client.app.state.services.completions.save(ADMIN_TENANT, request, {"set": "train"}, completion)
        made = client.post(f"{CHAT}/export", json={"metadata": {"set": "train"}}).json()
        assert made["exported"] == 5
        job = client.post(
            "/v1/fine_tuning/jobs", json={"model": DEFAULT_BASE_MODEL, "training_file": made["file_id"]}
        )
        assert job.status_code == 200, job.text  # every line passed the training data checks


def test_an_export_over_the_file_limit_is_refused_saying_how_to_narrow_it(tmp_path: Path) -> None:
    app = create_app(
        offline_settings(tmp_path, max_file_bytes=400),
        store=MemoryStore(),
        engine=EchoEngine({DEFAULT_BASE_MODEL}),
    )
    with TestClient(app, headers=auth(ADMIN)) as client:
        for i in range(4):
            _chat(client, f"question {i}", store=True)
        refused = assert_openai_error(client.post(f"{CHAT}/export", json={}), 400, "file_too_large")
        fit = int(re.search(r"the first (\d+) fit", refused["message"])[1])
        assert refused["param"] == "limit" and 0 < fit < 4
        assert client.post(f"{CHAT}/export", json={"limit": fit}).json()["exported"] == fit
        assert_openai_error(client.post(f"{CHAT}/export", json={"limit": fit + 1}), 400, "file_too_large")
        assert len(client.get("/v1/files").json()["data"]) == 1  # a refused export leaves no file


def test_an_export_reads_the_chats_a_page_at_a_time_in_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("service.inference.stored_completions.MATCHING_PAGE", 2)
    app = create_app(offline_settings(tmp_path), store=MemoryStore(), engine=EchoEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app, headers=auth(ADMIN)) as client:
        for i in range(5):
            _chat(client, f"question {i}", store=True)
        for limit, expected in ((None, 5), (3, 3), (4, 4)):
            made = client.post(f"{CHAT}/export", json={"limit": limit} if limit else {}).json()
            lines = client.get(f"/v1/files/{made['file_id']}/content").text.splitlines()
            asked = [json.loads(line)["messages"][0]["content"] for line in lines]
            assert asked == [f"question {i}" for i in range(expected)] and made["exported"] == expected
