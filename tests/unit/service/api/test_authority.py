"""No work outlives its authority: a stream opened with a key ends once the key is revoked, whether it is
flowing (a long chat answer) or waiting (a job's events followed live)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.api.streams import while_authorized
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, FakeEngine, auth, offline_settings


class EndlessEngine(FakeEngine):
    """Streams a token every few milliseconds, for ever: only the service can end it."""

    async def _stream(self, model: str, usage: bool) -> AsyncIterator[str]:
        while True:
            await asyncio.sleep(0.005)
            yield f"data: {json.dumps({'model': model, 'delta': 'la'})}\n\n"


@pytest.mark.parametrize("how", ["revoke the key", "disable the tenant"])
def test_revoking_a_key_or_disabling_its_tenant_ends_its_streams(tmp_path: Path, how: str) -> None:
    app = create_app(offline_settings(tmp_path), engine=EndlessEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app) as client:
        created = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()
        body = {
            "model": DEFAULT_BASE_MODEL,
            "messages": [{"role": "user", "content": "sing"}],
            "stream": True,
        }
        events = []
        with client.stream("POST", "/v1/chat/completions", json=body, headers=auth(created["key"])) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(json.loads(line.removeprefix("data: ")))
                if len(events) == 3 and how == "revoke the key":  # flowing: now the admin acts
                    client.delete(f"/v1/admin/api_keys/{created['id']}", headers=auth(ADMIN))
                elif len(events) == 3:
                    client.post("/v1/admin/tenants/acme/disable", headers=auth(ADMIN))
                if len(events) > 2000:  # ~10 s of tokens: it did not end
                    break
        assert events[0]["delta"] == "la" and "error" not in events[0]
        assert (
            events[-1]["error"]["type"] == "authentication_error"
            and "revoked" in events[-1]["error"]["message"]
        )
        assert all("error" not in e for e in events[:-1])


def test_a_quiet_stream_ends_at_its_next_keep_alive_and_a_valid_one_is_untouched() -> None:
    async def quiet() -> AsyncIterator[str]:
        yield "data: first\n\n"
        while True:  # a job that never logs again: only keep-alives
            await asyncio.sleep(0.02)
            yield ": keep-alive\n\n"

    async def finite() -> AsyncIterator[str]:
        for i in range(3):
            await asyncio.sleep(0.02)
            yield f"data: {i}\n\n"

    async def collect(stream: AsyncIterator[str]) -> list[str]:
        return [chunk async for chunk in stream]

    valid = {"now": True}

    async def scenario() -> tuple[list[str], list[str]]:
        ended = asyncio.ensure_future(
            collect(while_authorized(quiet(), lambda: valid["now"], interval_s=0.01))
        )
        await asyncio.sleep(0.1)
        assert not ended.done()  # still valid: it goes on
        valid["now"] = False
        untouched = await collect(while_authorized(finite(), lambda: True, interval_s=0.01))
        return await asyncio.wait_for(ended, 10), untouched

    ended, untouched = asyncio.run(scenario())
    assert ended[0] == "data: first\n\n" and "revoked" in ended[-1]
    assert set(ended[1:-1]) == {": keep-alive\n\n"}
    assert untouched == ["data: 0\n\n", "data: 1\n\n", "data: 2\n\n"]


def test_following_a_job_holds_one_of_the_tenants_stream_slots(tmp_path: Path) -> None:
    from tests.helpers import add_job

    app = create_app(offline_settings(tmp_path, max_concurrent_streams_per_tenant=1))
    with TestClient(app) as client:
        created = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()
        add_job(app.state.services.jobs.store, "ftjob-1", "acme", 1)  # queued: its events never end
        path, key = "/v1/fine_tuning/jobs/ftjob-1/events", auth(created["key"])
        with client.stream("GET", path, params={"stream": "true"}, headers=key) as followed:
            assert followed.status_code == 200
            second = client.get(path, params={"stream": "true"}, headers=key)
            assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
            assert client.get(path, headers=key).status_code == 200  # listing is not a stream
            client.delete(f"/v1/admin/api_keys/{created['id']}", headers=auth(ADMIN))  # ends the first
            assert "revoked" in followed.read().decode()


def test_an_eval_runs_key_may_only_ask_for_answers(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path), engine=EndlessEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app) as client:
        _, key = app.state.services.keys.create("acme", name="eval-run:evalrun_1")  # as the runner makes it
        body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 200
        for method, path in (("GET", "/v1/files"), ("GET", "/v1/models"), ("POST", "/v1/vector_stores")):
            refused = client.request(method, path, headers=auth(key))
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_scope", path
        made = client.post(
            "/v1/admin/api_keys", json={"tenant": "acme", "name": "eval-run:x"}, headers=auth(ADMIN)
        )
        assert made.status_code == 400  # the name is the service's own
