"""The evaluation client goes at its tenant's pace: a 429 is waited out as `Retry-After` says."""

from __future__ import annotations

import httpx
import pytest

from evals.client import ApiScorer, ModelCallError


def scorer_with(responses: list[httpx.Response], timeout: float = 60) -> tuple[ApiScorer, list]:
    calls: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return responses.pop(0)

    scorer = ApiScorer("http://api", "key", "m", "/nowhere", timeout=timeout)
    scorer.http = httpx.Client(base_url="http://api/v1", transport=httpx.MockTransport(handler))
    return scorer, calls


def limited() -> httpx.Response:
    body = {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}
    return httpx.Response(429, json=body, headers={"Retry-After": "0"})


def test_a_429_is_retried_after_the_wait() -> None:
    scorer, calls = scorer_with([limited(), limited(), httpx.Response(200, json={"ok": True})])
    assert scorer.post("/chat/completions", {}) == {"ok": True} and len(calls) == 3


def test_past_the_timeout_the_429_is_the_answer() -> None:
    slow = httpx.Response(
        429,
        json={"error": {"message": "wait", "code": "rate_limit_exceeded"}},
        headers={"Retry-After": "120"},
    )
    scorer, calls = scorer_with([slow], timeout=5)
    with pytest.raises(ModelCallError) as err:
        scorer.post("/chat/completions", {})
    assert err.value.status == 429 and err.value.code == "rate_limit_exceeded" and len(calls) == 1


def test_an_engine_at_capacity_is_retried_but_a_model_not_deployed_is_not() -> None:
    busy = httpx.Response(
        503,
        json={"error": {"message": "at capacity", "code": "engine_overloaded"}},
        headers={"Retry-After": "0"},
    )
    scorer, calls = scorer_with([busy, httpx.Response(200, json={"ok": True})])
    assert scorer.post("/chat/completions", {}) == {"ok": True} and len(calls) == 2

    absent = httpx.Response(503, json={"error": {"message": "not deployed", "code": "model_not_deployed"}})
    scorer, calls = scorer_with([absent])
    with pytest.raises(ModelCallError) as err:
        scorer.post("/chat/completions", {})
    assert err.value.code == "model_not_deployed" and len(calls) == 1
