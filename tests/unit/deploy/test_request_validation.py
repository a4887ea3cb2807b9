"""Chat and completion requests are validated by vLLM's own request models in the API, before they reach
an engine: every invalid request is a 400 naming what is wrong, never a 500."""

import pytest

from deploy.llm import _parse
from service.platform.errors import ApiError

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize(
    "endpoint, extra, param, says",
    [
        ("chat", {"stream_options": {"include_usage": True}}, "stream_options", "stream=True"),
        ("chat", {"top_logprobs": 2}, "top_logprobs", "logprobs"),
        ("chat", {"logprobs": True, "top_logprobs": -5}, "top_logprobs", "positive"),
        ("chat", {"prompt_logprobs": 1, "stream": True}, "prompt_logprobs", "stream"),
        ("chat", {"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
        ("chat", {"tools": []}, "tools", "empty"),
        ("chat", {"tool_choice": "required"}, "tool_choice", "tools"),
        ("chat", {"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "sometimes"),
        (
            "chat",
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
            "match",
        ),
        ("chat", {"structured_outputs": {"regex": "a+", "choice": ["a"]}}, None, "one kind"),
        (
            "chat",
            {"add_generation_prompt": True, "continue_final_message": True},
            None,
            "continue_final_message",
        ),
        ("chat", {"cache_salt": ""}, "cache_salt", "non-empty"),
        ("completion", {"prompt": ""}, "prompt", "non-empty"),
        (
            "completion",
            {"prompt": "hi", "stream_options": {"include_usage": True}},
            "stream_options",
            "stream",
        ),
    ],
)
def test_what_vllm_refuses_is_a_400_naming_it(
    endpoint: str, extra: dict, param: str | None, says: str
) -> None:
    body = {**CHAT, **extra} if endpoint == "chat" else {"model": "m", **extra}
    with pytest.raises(ApiError) as caught:
        _parse(endpoint, body)
    assert caught.value.status == 400 and caught.value.param == param
    assert says in caught.value.message


def test_a_valid_request_parses() -> None:
    assert _parse("chat", {**CHAT, "tools": TOOLS, "tool_choice": "auto"}).tool_choice == "auto"
