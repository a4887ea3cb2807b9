"""Sampling parameters stored for later (an eval run's, a model grader's) are checked when they are given, by
the engine's own rules: what the engine would refuse is a 400 at creation naming the field, not an error
on every item of the run. The rules are checked against vLLM's own validation of the same fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.protocol.sampling import SamplingError, check_sampling
from tests.helpers import ADMIN, MemoryStore, auth
from tests.unit.service.evals.test_eval_runs import EVAL, FakeTasks, make_client, run_body

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]

REFUSED = [
    ({"top_p": 0}, "top_p", "(0, 1]"),
    ({"top_p": 1.5}, "top_p", "(0, 1]"),
    ({"temperature": -0.1}, "temperature", "[0, 2]"),
    ({"temperature": 2.5}, "temperature", "[0, 2]"),
    ({"temperature": "hot"}, "temperature", "finite number"),
    ({"presence_penalty": 3}, "presence_penalty", "[-2, 2]"),
    ({"frequency_penalty": -2.5}, "frequency_penalty", "[-2, 2]"),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "at least 1"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens", "integer"),
    ({"seed": "abc"}, "seed", "64-bit integer"),
    ({"stop": ""}, "stop", "empty string"),
    ({"stop": ["x", 3]}, "stop", "list of strings"),
    ({"response_format": {"type": "yaml"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", '"name"'),
    ({"tools": []}, "tools", "non-empty"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", '"required"'),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "'g'"),
]
ACCEPTED = [
    {},
    {"temperature": 0, "top_p": 1, "seed": 42, "max_completion_tokens": 1},
    {"temperature": 2, "top_p": 0.01, "presence_penalty": -2, "frequency_penalty": 2, "max_tokens": 64},
    {"stop": ["\n", "END"], "response_format": {"type": "json_object"}},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
    {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "f"}}},
]


def _vllm_refuses(params: dict) -> bool:
    """Whether vLLM refuses a chat request with `params`: its request model, then its sampling params."""
    from vllm.exceptions import VLLMClientError

    from deploy.llm import _parse
    from service.platform.errors import ApiError

    try:
        request = _parse("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], **params})
        # vLLM's server passes the request's own limit (vllm.entrypoints.serve.utils.api_utils.get_max_tokens)
        asked = (
            request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
        )
        request.to_sampling_params(
            max_tokens=16 if asked is None else min(asked, 16), default_sampling_params={}
        )
    except (ApiError, ValueError, VLLMClientError):
        return True
    return False


@pytest.mark.parametrize("params, field, says", REFUSED)
def test_what_the_engine_refuses_is_refused_naming_the_field(params: dict, field: str, says: str) -> None:
    with pytest.raises(SamplingError) as caught:
        check_sampling(params, "sampling_params")
    assert caught.value.param == f"sampling_params.{field}" and says in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"sampling_params.{field}")
    assert _vllm_refuses(params), "the engine accepts what the check refuses"


@pytest.mark.parametrize("params", ACCEPTED)
def test_what_the_engine_accepts_is_accepted(params: dict) -> None:
    check_sampling(params, "sampling_params")
    assert not _vllm_refuses(params)


def test_a_run_with_sampling_the_engine_refuses_is_a_400_and_queues_nothing(tmp_path: Path) -> None:
    tasks = FakeTasks()
    with make_client(tmp_path, MemoryStore(), tasks) as client:
        ev = client.post("/v1/evals", json=EVAL, headers=auth(ADMIN)).json()
        body = run_body(2)
        body["data_source"]["sampling_params"] = {"temperature": 0, "top_p": 0}
        resp = client.post(f"/v1/evals/{ev['id']}/runs", json=body, headers=auth(ADMIN))
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["param"] == "data_source.sampling_params.top_p" and "(0, 1]" in error["message"]
        assert client.get(f"/v1/evals/{ev['id']}/runs", headers=auth(ADMIN)).json()["data"] == []
        body["data_source"]["sampling_params"] = {"temperature": 0, "top_p": 1}
        assert client.post(f"/v1/evals/{ev['id']}/runs", json=body, headers=auth(ADMIN)).status_code == 200
    assert not tasks.seen or set(tasks.seen) <= {0, 1}


def test_a_judge_with_sampling_the_engine_refuses_is_a_400_naming_the_grader(tmp_path: Path) -> None:
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "SmolLM2-135M-Instruct",
        "input": [{"role": "user", "content": "Score {{sample.output_text}} from 1 to 10."}],
        "range": [1, 10],
        "sampling_params": {"temperature": 5},
    }
    with make_client(tmp_path, MemoryStore(), FakeTasks()) as client:
        resp = client.post("/v1/evals", json={**EVAL, "testing_criteria": [judge]}, headers=auth(ADMIN))
        assert resp.status_code == 400, resp.text
        error = resp.json()["error"]
        assert error["param"].startswith("testing_criteria[0]")
        assert "sampling_params.temperature must be in [0, 2], got 5" in error["message"]
