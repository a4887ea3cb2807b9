"""Stored responses: a response is kept unless `store` is false, continued by `previous_response_id` (its
input and output ahead of the new input, its instructions not), read back with its input items, deleted,
expired, and never another tenant's."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from service.protocol.responses import history_items, input_param, to_chat
from tests.helpers import ADMIN, EchoEngine, MemoryStore, assert_openai_error, auth, offline_settings


def _create(client: TestClient, **fields: object) -> dict:
    resp = client.post("/v1/responses", json={"model": DEFAULT_BASE_MODEL, **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _streamed(client: TestClient, **fields: object) -> dict:
    body = {"model": DEFAULT_BASE_MODEL, "stream": True, **fields}
    with client.stream("POST", "/v1/responses", json=body) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    return events[-1]["response"]


def test_a_stored_response_is_continued_with_its_input_and_output_but_not_its_instructions(stack) -> None:
    client, engine = stack
    first = _create(client, instructions="Be brief.", input="My name is Ada.")
    assert first["store"] is True and first["previous_response_id"] is None
    second = _create(client, previous_response_id=first["id"], input="What is my name?")
    assert second["previous_response_id"] == first["id"]
    assert engine.calls[-1][2]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "2 messages, the last: My name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    third = _streamed(client, previous_response_id=second["id"], input="And again?", instructions="Rhyme.")
    messages = engine.calls[-1][2]["messages"]
    assert messages[0] == {"role": "system", "content": "Rhyme."} and len(messages) == 6
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant", "user"]
    # What the streamed turn answered is what is stored, and what the next turn is given.
    assert client.get(f"/v1/responses/{third['id']}").json() == third
    _create(client, previous_response_id=third["id"], input="Last.")
    assert engine.calls[-1][2]["messages"][-2] == {
        "role": "assistant",
        "content": third["output"][0]["content"][0]["text"],
    }


def test_a_stored_response_is_read_back_with_its_input_items_and_deleted(stack) -> None:
    client, _ = stack
    turns = [
        {"role": "user", "content": "one"},
        {"type": "message", "role": "assistant", "content": "two"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}], "id": "msg_mine"},
    ]
    made = _create(client, input=turns)
    assert client.get(f"/v1/responses/{made['id']}").json() == made
    listed = client.get(f"/v1/responses/{made['id']}/input_items", params={"order": "asc"}).json()
    assert [i["content"] for i in listed["data"]] == [
        [{"type": "input_text", "text": "one"}],
        [{"type": "output_text", "text": "two"}],
        [{"type": "input_text", "text": "three"}],
    ]
    assert listed["data"][2]["id"] == "msg_mine" and all(i["id"].startswith("msg_") for i in listed["data"])
    newest = client.get(f"/v1/responses/{made['id']}/input_items", params={"limit": 2}).json()
    assert [i["id"] for i in newest["data"]] == ["msg_mine", listed["data"][1]["id"]] and newest["has_more"]
    rest = client.get(
        f"/v1/responses/{made['id']}/input_items", params={"limit": 2, "after": newest["last_id"]}
    ).json()
    assert [i["id"] for i in rest["data"]] == [listed["data"][0]["id"]] and not rest["has_more"]

    later = _create(client, previous_response_id=made["id"], input="four")
    deleted = client.delete(f"/v1/responses/{made['id']}").json()
    assert deleted == {"id": made["id"], "object": "response", "deleted": True}
    assert_openai_error(client.get(f"/v1/responses/{made['id']}"), 404, "response_not_found")
    assert_openai_error(client.delete(f"/v1/responses/{made['id']}"), 404, "response_not_found")
    # The conversation that continued it now starts after it.
    _, engine = stack
    _create(client, previous_response_id=later["id"], input="five")
    assert [m["content"] for m in engine.calls[-1][2]["messages"]][::2] == ["four", "five"]


def test_store_false_keeps_nothing(stack) -> None:
    client, _ = stack
    for made in (_create(client, input="Hi", store=False), _streamed(client, input="Hi", store=False)):
        assert made["store"] is False
        assert_openai_error(client.get(f"/v1/responses/{made['id']}"), 404, "response_not_found")
        err = assert_openai_error(
            client.post(
                "/v1/responses",
                json={"model": DEFAULT_BASE_MODEL, "input": "Hi", "previous_response_id": made["id"]},
            ),
            404,
            "response_not_found",
        )
        assert err["param"] == "previous_response_id"


def test_another_tenants_response_does_not_exist(stack) -> None:
    client, _ = stack
    mine = _create(client, input="secret")
    other = auth(client.post("/v1/admin/api_keys", json={"tenant": "acme"}).json()["key"])
    for resp in (
        client.get(f"/v1/responses/{mine['id']}", headers=other),
        client.get(f"/v1/responses/{mine['id']}/input_items", headers=other),
        client.delete(f"/v1/responses/{mine['id']}", headers=other),
        client.post(
            "/v1/responses",
            json={"model": DEFAULT_BASE_MODEL, "input": "x", "previous_response_id": mine["id"]},
            headers=other,
        ),
    ):
        assert_openai_error(resp, 404, "response_not_found")
    assert client.get(f"/v1/responses/{mine['id']}").status_code == 200


def test_responses_past_their_retention_are_deleted(stack) -> None:
    client, _ = stack
    made = _create(client, input="Hi")
    responses = client.app.state.services.responses.stored
    assert responses.expire() == 0 and responses.expire(now=time.time() + 29 * 86400) == 0
    assert responses.expire(now=time.time() + 31 * 86400) == 1
    assert_openai_error(client.get(f"/v1/responses/{made['id']}"), 404, "response_not_found")


def test_a_function_call_is_answered_in_the_turn_that_continues_it() -> None:
    call = {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"}
    first_in = [{"type": "message", "id": "msg_1", "role": "user", "content": "Call f."}]
    search = {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["f"]}
    history = history_items([(first_in, {"output": [search, call]})])
    request = {"model": "m", "input": [{"type": "function_call_output", "call_id": "c1", "output": "42"}]}
    messages = to_chat(request, history)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == "c1" and messages[2]["content"] == "42"
    # An error in a message that came from the stored turns names previous_response_id.
    assert input_param("messages[1].tool_calls[0]", request, history) == "previous_response_id"
    assert input_param("messages[2].content", request, history) == "input[0].content"


def test_stored_responses_count_toward_the_tenants_storage_limit(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, max_storage_bytes_per_tenant=4000)
    app = create_app(settings, store=MemoryStore(), engine=EchoEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app) as client:
        tenant = auth(
            client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
        )
        body = {"model": DEFAULT_BASE_MODEL, "input": "x" * 1500}
        assert client.post("/v1/responses", json=body, headers=tenant).status_code == 200
        err = assert_openai_error(
            client.post("/v1/responses", json=body, headers=tenant), 429, "quota_exceeded"
        )
        assert (
            "stored responses" in err["message"]
            and "TUNESERVE_MAX_STORAGE_BYTES_PER_TENANT" in err["message"]
        )
        # Nothing stored, nothing refused; and a file that would pass the limit with them is refused too.
        assert client.post("/v1/responses", json={**body, "store": False}, headers=tenant).status_code == 200
        upload = client.post(
            "/v1/files", files={"file": ("a.txt", b"y" * 1500)}, data={"purpose": "user_data"}, headers=tenant
        )
        assert_openai_error(upload, 429, "quota_exceeded")
        # Another tenant's room is its own.
        assert client.post("/v1/responses", json=body, headers=auth(ADMIN)).status_code == 200
