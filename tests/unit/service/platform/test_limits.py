"""Per-tenant limits: a sliding minute of requests, open streams; pure logic with a fake clock, then
through the API with a fake engine (429s in OpenAI's shape, with the headers its clients read)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.errors import ApiError
from service.platform.limits import TenantLimits
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_minute_of_requests_slides() -> None:
    clock = Clock()
    limits = TenantLimits(requests_per_minute=3, concurrent_streams=2, clock=clock)
    for remaining in ("2", "1", "0"):
        assert limits.admit("a", stream=False).headers["x-ratelimit-remaining-requests"] == remaining
        clock.now += 10
    with pytest.raises(ApiError) as err:
        limits.admit("a", stream=False)
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "30"  # the first ages out at +60
    assert limits.admit("b", stream=False).headers["x-ratelimit-remaining-requests"] == "2"  # another tenant
    assert limits.admit("a", stream=False, exempt=True).headers == {}  # the admin is not counted
    clock.now += 30
    limits.admit("a", stream=False)  # the oldest left the window


def test_streams_hold_a_slot_until_released_once() -> None:
    limits = TenantLimits(requests_per_minute=100, concurrent_streams=2, clock=Clock())
    first, second = limits.admit("a", stream=True), limits.admit("a", stream=True)
    with pytest.raises(ApiError) as err:
        limits.admit("a", stream=True)
    assert err.value.code == "too_many_streams"
    limits.admit("a", stream=False)  # a plain request needs no slot
    first.release()
    first.release()  # twice counts once
    third = limits.admit("a", stream=True)
    with pytest.raises(ApiError):
        limits.admit("a", stream=True)
    second.release(), third.release()


def test_the_api_answers_429_with_openai_headers_per_tenant(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, models_dir=MODELS, rate_limit_requests_per_minute=2)
    app = create_app(settings, store=MemoryStore(), engine=FakeEngine({DEFAULT_BASE_MODEL}))
    body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app, headers=auth(ADMIN)) as client:
        keys = {t: client.post("/v1/admin/api_keys", json={"tenant": t}).json()["key"] for t in ("a", "b")}
        ok = client.post("/v1/chat/completions", json=body, headers=auth(keys["a"]))
        assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "2"
        assert ok.headers["x-ratelimit-remaining-requests"] == "1"
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth(keys["a"]))
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        refused = client.post("/v1/chat/completions", json=body, headers=auth(keys["a"]))
        err = assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert err["type"] == "rate_limit_error" and int(refused.headers["retry-after"]) >= 1
        assert client.post("/v1/chat/completions", json=body, headers=auth(keys["b"])).status_code == 200
        assert all(client.post("/v1/chat/completions", json=body).status_code == 200 for _ in range(3))
        assert app.state.services.limits._streams["a"] == 0  # the finished stream gave its slot back


def test_tokens_of_the_last_minute_are_a_limit_too() -> None:
    clock = Clock()
    limits = TenantLimits(requests_per_minute=100, concurrent_streams=2, tokens_per_minute=1000, clock=clock)
    limits.admit("a", stream=False)
    limits.record_tokens("a", 600)
    clock.now += 20
    headers = limits.admit("a", stream=False).headers
    assert headers["x-ratelimit-remaining-tokens"] == "400" and headers["x-ratelimit-limit-tokens"] == "1000"
    limits.record_tokens("a", 500)  # an answer may go past it: the next request is refused
    with pytest.raises(ApiError) as err:
        limits.admit("a", stream=False)
    assert err.value.status == 429 and "1000 tokens per minute" in err.value.message
    assert err.value.headers["Retry-After"] == "40"  # once the 600 of t=0 age out, 500 remain: under 1000
    limits.admit("b", stream=False)  # another tenant
    clock.now += 40
    limits.admit("a", stream=False)


def test_the_api_counts_each_answers_tokens(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, models_dir=MODELS, rate_limit_tokens_per_minute=15)
    app = create_app(settings, store=MemoryStore(), engine=FakeEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app) as client:
        key = auth(
            client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
        )
        body = {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": "hi"}]}
        first = client.post("/v1/chat/completions", json=body, headers=key)  # 9 tokens (the fake's usage)
        assert first.headers["x-ratelimit-remaining-tokens"] == "15"  # counted once its usage is known
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=key) as s:
            s.read()  # 9 more, from the stream's usage chunk
        assert_openai_error(
            client.post("/v1/chat/completions", json=body, headers=key), 429, "rate_limit_exceeded"
        )
        assert client.post("/v1/chat/completions", json=body, headers=auth(ADMIN)).status_code == 200
