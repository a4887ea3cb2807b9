"""Regression tests for the probes of a hostile user (issue #14's table): each one got a 500 carrying
internals, a read outside the service's folders, or more than its share; each must get a precise 4xx."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    settings = offline_settings(tmp_path_factory.mktemp("hostile"), models_dir=MODELS)
    app = create_app(settings, store=MemoryStore(), engine=FakeEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app, headers=auth(ADMIN), raise_server_exceptions=False) as client:
        yield client


def test_a_suite_name_is_never_a_path(client: TestClient) -> None:
    for name in ("../suites/world-capitals", "world-capitals/../world-capitals", "/etc", "."):
        err = assert_openai_error(client.post("/v1/evals", json={"suite": name}), 404, "not_found")
        assert "world-capitals" in err["message"]  # the list of real suites
    assert_openai_error(client.post("/v1/evals", json={"suite": "x" * 300}), 400, "invalid_value")
    assert client.post("/v1/evals", json={"suite": "world-capitals"}).status_code == 200


def test_an_eval_name_cannot_be_null(client: TestClient) -> None:
    ev = client.post("/v1/evals", json={"suite": "world-capitals"}).json()
    err = assert_openai_error(client.post(f"/v1/evals/{ev['id']}", json={"name": None}), 400, "invalid_value")
    assert err["param"] == "name"
    renamed = client.post(f"/v1/evals/{ev['id']}", json={"name": "capitals", "metadata": None}).json()
    assert renamed["name"] == "capitals"


def test_a_file_with_any_name_downloads(client: TestClient) -> None:
    for name in ("файл.jsonl", "back\\slash.jsonl", "名前 with spaces.txt"):
        up = client.post("/v1/files", data={"purpose": "evals"}, files={"file": (name, b'{"a": 1}\n')}).json()
        resp = client.get(f"/v1/files/{up['id']}/content")
        assert resp.status_code == 200 and resp.content == b'{"a": 1}\n'
        assert client.get(f"/v1/files/{up['id']}").json()["filename"] == name


@pytest.mark.parametrize("purpose", ["fine-tune", "evals"])
def test_deeply_nested_json_lines_are_refused_naming_the_line(client: TestClient, purpose: str) -> None:
    good = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    body = good + b"\n" + b"[" * 100_000 + b"\n"
    resp = client.post("/v1/files", data={"purpose": purpose}, files={"file": ("deep.jsonl", body)})
    if purpose == "evals":  # an evals file is read when a run uses it
        file_id = resp.json()["id"]
        ev = client.post("/v1/evals", json={"suite": "world-capitals"}).json()
        source = {"type": "file_id", "id": file_id}
        resp = client.post(
            f"/v1/evals/{ev['id']}/runs",
            json={"data_source": {"type": "completions", "model": "SmolLM2-135M-Instruct", "source": source}},
        )
    err = assert_openai_error(resp, 400)
    assert "line 2" in err["message"] and "nested too deeply" in err["message"], err


def test_a_deeply_nested_request_body_is_a_400(client: TestClient) -> None:
    resp = client.post(
        "/v1/chat/completions",
        content=b"[" * 100_000,
        headers={**auth(ADMIN), "content-type": "application/json"},
    )
    assert_openai_error(resp, 400)


def test_a_500_carries_a_request_id_and_no_internals(client: TestClient, monkeypatch) -> None:
    services = client.app.state.services

    def broken(*args, **kwargs):
        raise RuntimeError("SELECT secret FROM /var/lib/tuneserve/tuneserve.db")

    monkeypatch.setattr(services.models, "list", broken)
    resp = client.get("/v1/models")
    err = assert_openai_error(resp, 500)
    assert "SELECT" not in err["message"] and "/var/lib" not in err["message"]
    assert resp.headers["x-request-id"] in err["message"]


# Authentication before the body; bodies bounded while they stream in ----------------------------------


async def _call(
    app, headers: dict[str, str], chunks: list[bytes], stall: bool = False
) -> tuple[int, int, dict]:
    """Drive the ASGI app with a POST /v1/chat/completions whose body arrives in `chunks` (and then never
    ends, if `stall`); returns the status, how many chunks the app read, and the response body."""
    import asyncio
    import json

    pending = list(chunks)
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        if stall and not pending:
            await asyncio.Event().wait()  # the client stopped sending
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending) or stall}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, read, json.loads(body)


def test_no_key_no_body_read_and_bodies_stop_at_the_limit(client: TestClient) -> None:
    import asyncio

    app = client.app
    limit = app.state.services.settings.max_request_bytes
    megabyte = b" " * (1024 * 1024)
    anonymous = asyncio.run(_call(app, {"content-type": "application/json"}, [megabyte] * 300))
    assert anonymous[0] == 401 and anonymous[1] == 0  # refused before a byte of the 300 MB was read
    assert anonymous[2]["error"]["code"] == "missing_api_key"

    declared = {**auth(ADMIN), "content-type": "application/json", "content-length": str(limit + 1)}
    status, read, body = asyncio.run(_call(app, declared, [megabyte] * 300))
    assert (status, read, body["error"]["code"]) == (413, 0, "request_too_large")
    assert "TUNESERVE_MAX_REQUEST_BYTES" in body["error"]["message"]

    # A body that declares no length (chunked) is cut off once it passes the limit.
    chunked = {**auth(ADMIN), "content-type": "application/json"}
    n = limit // len(megabyte) + 50
    status, read, body = asyncio.run(_call(app, chunked, [megabyte] * n))
    assert (
        status == 413
        and read <= limit // len(megabyte) + 1 < n
        and body["error"]["code"] == "request_too_large"
    )


def test_a_body_that_stops_coming_is_a_408_and_a_streams_wait_for_its_client_is_not_cut(
    client: TestClient,
) -> None:
    import asyncio

    from service.api.guard import RequestGuard, _bounded

    settings = client.app.state.services.settings
    guard = RequestGuard(client.app, settings.max_request_bytes, settings.max_file_bytes, 0.2)

    async def impatient(scope, receive, send) -> None:  # a guard with a short timeout in front of the app
        await guard({**scope, "app": client.app}, receive, send)  # the app whose keys it checks

    headers = {**auth(ADMIN), "content-type": "application/json"}
    status, read, body = asyncio.run(_call(impatient, headers, [b'{"model": '], stall=True))
    assert (status, read, body["error"]["code"]) == (408, 2, "request_timeout")
    assert "TUNESERVE_REQUEST_BODY_TIMEOUT_S" in body["error"]["message"]

    async def client_leaves_later() -> list[str]:
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]

        async def receive() -> dict:
            if len(messages) == 1:
                await asyncio.sleep(0.5)  # a stream runs on until its client leaves
            return messages.pop(0)

        bounded = _bounded(receive, 1024, upload=False, timeout_s=0.1)
        return [(await bounded())["type"], (await bounded())["type"]]

    assert asyncio.run(client_leaves_later()) == ["http.request", "http.disconnect"]


def test_user_patterns_run_in_linear_time_or_are_refused(client: TestClient) -> None:
    """`^(a+)+$` backtracks exponentially in Python's `re`: 29 characters stalled the whole API for 6.7 s,
    each one more doubled it. On RE2, 60 characters are nothing."""
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "pattern": "^(a+)+$"}},
        "required": ["word"],
    }
    ev = client.post(
        "/v1/evals",
        json={
            "data_source_config": {"type": "custom", "item_schema": schema},
            "testing_criteria": [
                {
                    "type": "string_check",
                    "name": "a",
                    "input": "{{item.word}}",
                    "reference": "^(a+)+$",
                    "operation": "regex",
                }
            ],
        },
    )
    assert ev.status_code == 200, ev.text
    items = [{"item": {"word": "a" * 60 + "b"}}]
    resp = client.post(
        f"/v1/evals/{ev.json()['id']}/runs",
        json={"data_source": {"type": "jsonl", "source": {"type": "file_content", "content": items}}},
    )
    err = assert_openai_error(resp, 400, "invalid_item")
    assert "does not match" in err["message"]

    backreference = {**schema, "properties": {"word": {"type": "string", "pattern": "(a)\\1"}}}
    err = assert_openai_error(
        client.post(
            "/v1/evals",
            json={
                "data_source_config": {"type": "custom", "item_schema": backreference},
                "testing_criteria": [
                    {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"}
                ],
            },
        ),
        400,
    )
    assert "RE2" in err["message"] and err["param"] == "data_source_config.item_schema"


def test_n_is_bounded(client: TestClient) -> None:
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 128}
    err = assert_openai_error(client.post("/v1/chat/completions", json=body), 400, "invalid_value")
    assert err["param"] == "n"
    assert client.post("/v1/chat/completions", json={**body, "n": 2}).status_code == 200


def test_an_empty_suite_name_is_a_400(client: TestClient) -> None:  # found by the fuzzer: it was a 500
    err = assert_openai_error(client.post("/v1/evals", json={"suite": ""}), 400, "invalid_value")
    assert err["param"] == "suite"


def test_prompts_per_completions_request_are_bounded(client: TestClient) -> None:
    body = {"model": DEFAULT_BASE_MODEL, "prompt": ["Hi"] * 65, "max_tokens": 1}
    err = assert_openai_error(client.post("/v1/completions", json=body), 400, "invalid_value")
    assert err["param"].startswith("prompt")
    assert client.post("/v1/completions", json={**body, "prompt": ["Hi"] * 64}).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/v1/vector_stores", "/v1/evals", "/v1/fine_tuning/jobs"],
)
def test_metadata_is_held_to_openais_limits(client: TestClient, path: str) -> None:
    """16 pairs, keys up to 64 characters, values up to 512: a value of 600 characters was stored."""
    body = {"suite": "world-capitals"} if path == "/v1/evals" else {}
    if path == "/v1/fine_tuning/jobs":
        body = {"model": DEFAULT_BASE_MODEL, "training_file": "file-none"}
    for metadata, param in [
        ({"k": "v" * 513}, "metadata.k"),
        ({"k" * 65: "v"}, "metadata"),
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
    ]:
        err = assert_openai_error(
            client.post(path, json={**body, "metadata": metadata}), 400, "invalid_value"
        )
        assert err["param"].startswith(param), err
    if path != "/v1/fine_tuning/jobs":  # (that one then needs a real training file)
        made = client.post(path, json={**body, "metadata": {"k" * 64: "v" * 512}})
        assert made.status_code == 200 and made.json()["metadata"] == {"k" * 64: "v" * 512}


def test_deprecated_function_calling_is_a_400_saying_what_to_send(client: TestClient) -> None:
    """vLLM ignores `functions` and `function_call`: the model answered as if it had no functions."""
    chat = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "Weather?"}]}
    for field, value, instead in [
        ("functions", [{"name": "get_weather", "parameters": {"type": "object"}}], "tools"),
        ("function_call", "auto", "tool_choice"),
    ]:
        err = assert_openai_error(client.post("/v1/chat/completions", json={**chat, field: value}), 400)
        assert err["param"] == field and f"send `{instead}`" in err["message"]
        assert err["message"].startswith(f"{field}: the deprecated")  # not pydantic's "Value error, "
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
