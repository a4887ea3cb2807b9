"""The chat and completions routes with a fake engine: who may use which model, what reaches the engine,
and how its answers come back. The real engine is vLLM (tests/integration/test_serving.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.db import FineTunedModelRow
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, USAGE, FakeEngine, assert_openai_error, auth, offline_settings

MINE = f"{DEFAULT_BASE_MODEL}:mine-abc123"


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine({DEFAULT_BASE_MODEL})


@pytest.fixture
def client(tmp_path: Path, engine: FakeEngine) -> TestClient:
    app = create_app(offline_settings(tmp_path), engine=engine)
    services = app.state.services
    with services.db.session() as s:
        s.add(
            FineTunedModelRow(
                id=MINE, tenant_id="default", base_model=DEFAULT_BASE_MODEL, adapter_prefix="x/"
            )
        )
    services.chat.adapters._good.add(MINE)  # the adapter's files are checked in the integration tier
    return TestClient(app)


def chat(client: TestClient, key: str = ADMIN, **body: object):
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    return client.post("/v1/chat/completions", json=body, headers=auth(key))


def test_the_engine_gets_the_resolved_model_and_every_field(client: TestClient, engine: FakeEngine) -> None:
    resp = chat(client, model=MINE, temperature=0.2, ignore_eos=True)
    assert resp.status_code == 200 and resp.json()["model"] == MINE
    endpoint, model, body = engine.calls[-1]
    assert endpoint == "chat" and model.adapter_prefix == "x/" and model.base_model == DEFAULT_BASE_MODEL
    assert body["temperature"] == 0.2 and body["ignore_eos"] is True  # vLLM's extensions pass through
    assert "max_tokens" not in body  # unset fields stay unset: vLLM applies its defaults

    resp = client.post(
        "/v1/completions",
        json={"model": DEFAULT_BASE_MODEL, "prompt": "x", "echo": True},
        headers=auth(ADMIN),
    )
    assert resp.json()["endpoint"] == "completions" and engine.calls[-1][2]["echo"] is True


def test_streams_come_back_as_server_sent_events(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers=auth(ADMIN),
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[0][6:])["delta"] == "Hel"


def test_another_tenants_model_does_not_exist(client: TestClient, engine: FakeEngine) -> None:
    key = client.post("/v1/admin/api_keys", json={"tenant": "other"}, headers=auth(ADMIN)).json()["key"]
    assert_openai_error(chat(client, key, model=MINE), 404, "model_not_found")
    assert_openai_error(chat(client, model="nope"), 404, "model_not_found")
    assert chat(client, key).status_code == 200  # base models are everyone's
    assert [c[1].id for c in engine.calls] == [DEFAULT_BASE_MODEL]


def test_a_base_model_that_is_not_deployed_is_a_503(client: TestClient, engine: FakeEngine) -> None:
    engine.served.clear()
    err = assert_openai_error(chat(client), 503, "model_not_deployed")
    assert "TUNESERVE_SERVED_MODELS" in err["message"]


def test_missing_essentials_are_refused_before_the_engine(client: TestClient, engine: FakeEngine) -> None:
    assert_openai_error(chat(client, messages=[]), 400)
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": []}, headers=auth(ADMIN)), 400)
    assert not engine.calls


def test_without_an_engine_nothing_is_served(tmp_path: Path) -> None:
    client = TestClient(create_app(offline_settings(tmp_path)))
    assert_openai_error(chat(client), 503, "model_not_deployed")


def metric(client: TestClient, line_start: str) -> float:
    text = client.get("/metrics", headers=auth(ADMIN)).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return sum(values)


def test_metrics_count_requests_tokens_and_errors_per_model_and_tenant(client: TestClient) -> None:
    tenant = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
    assert chat(client, key=tenant).status_code == 200
    # A stream that did not ask for usage: the engine was asked (to count tokens), the client gets no
    # usage chunk; one that asked gets it.
    for asked in (False, True):
        body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
        if asked:
            body["stream_options"] = {"include_usage": True}
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(tenant)) as resp:
            events = [line for line in resp.iter_lines() if line.startswith("data: {")]
        assert any('"usage"' in e for e in events) == asked, events
    assert chat(client, key=tenant, model="no-such-model").status_code == 404

    ok = (
        f'tuneserve_requests_total{{endpoint="chat",model="{DEFAULT_BASE_MODEL}",status="200",tenant="acme"}}'
    )
    assert metric(client, ok) == 3
    assert (
        metric(client, 'tuneserve_requests_total{endpoint="chat",model="-",status="404",tenant="acme"}') == 1
    )
    prompt = (
        f'tuneserve_tokens_total{{endpoint="chat",kind="prompt",model="{DEFAULT_BASE_MODEL}",tenant="acme"}}'
    )
    assert metric(client, prompt) == 3 * USAGE["prompt_tokens"]
    assert metric(client, 'tuneserve_time_to_first_token_seconds_count{endpoint="chat"') == 2
    assert client.get("/metrics", headers=auth(tenant)).status_code == 403
    assert client.get("/metrics").status_code == 401


def test_tools_reach_a_template_without_tools_as_text(client: TestClient, engine: FakeEngine) -> None:
    from bench.tool_task import TOOLS, call

    earlier = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather", {"city": "Paris"})]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    assert chat(client, messages=earlier, tools=TOOLS, tool_choice="auto").status_code == 200
    _, _, body = engine.calls[-1]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert "<tools>" in body["messages"][0]["content"] and "<tool_call>" in body["messages"][2]["content"]
    assert body["tools"] == TOOLS and body["tool_choice"] == "auto"  # vLLM's parser reads the calls back
    # tool_choice "none": the tools are not shown to the model.
    assert chat(client, messages=earlier[:1], tools=TOOLS, tool_choice="none").status_code == 200
    assert engine.calls[-1][2]["messages"] == earlier[:1]

    broken = [earlier[0], {**earlier[1], "tool_calls": [call("c1", "get_weather", {})]}]
    broken[1]["tool_calls"][0]["function"]["arguments"] = "{city"
    error = assert_openai_error(chat(client, messages=broken, tools=TOOLS), 400, "invalid_tool_call")
    assert "messages[1].tool_calls[0].function.arguments is not valid JSON" in error["message"]
    assert error["param"] == "messages[1].tool_calls"
    bad_tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]
    error = assert_openai_error(chat(client, tools=bad_tools), 400, "invalid_tools")
    assert error["param"] == "tools" and "not a valid JSON schema" in error["message"]


def test_a_malformed_message_is_a_400_naming_it_before_the_engine(
    client: TestClient, engine: FakeEngine
) -> None:
    # vLLM took a "wizard" message and answered; a content part of an unknown type was a 500.
    messages = [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "hi"}]
    err = assert_openai_error(chat(client, messages=messages), 400)
    assert err["param"] == "messages[1].role" and "'wizard'" in err["message"]
    err = assert_openai_error(chat(client, messages=[{"role": "user", "content": [{"type": "video"}]}]), 400)
    assert err["param"] == "messages[0].content[0].type"
    assert not engine.calls


def test_a_union_field_reports_the_member_of_the_values_type(client: TestClient) -> None:
    # `stop` is a string or a list of at most 4: a list of 5 is too long, not "not a string".
    err = assert_openai_error(chat(client, stop=["a"] * 5), 400)
    assert err["param"] == "stop" and "at most 4" in err["message"]
