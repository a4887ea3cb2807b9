"""Chat messages are checked as OpenAI checks them: each problem named where it is."""

from __future__ import annotations

import pytest

from service.protocol.chat_messages import MessageFormatError, check_messages

USER = {"role": "user", "content": "hi"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


@pytest.mark.parametrize(
    "messages",
    [
        [USER],
        [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Really."}, USER],
        [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}],
        [
            USER,
            {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "c1", "content": "1"},
        ],
        [{"role": "user", "name": "ann", "content": [{"type": "text", "text": "what is this?"}]}],
        [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
            }
        ],
        [{"role": "user", "content": [{"type": "image_url", "image_url": "file-abc"}]}],
        [USER, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}],
    ],
)
def test_what_openai_accepts_passes(messages: list) -> None:
    check_messages(messages)


@pytest.mark.parametrize(
    ("messages", "param", "code", "words"),
    [
        (["hi"], "messages[0]", "invalid_type", "expected an object, but got a string"),
        ([{"content": "hi"}], "messages[0].role", "missing_required_parameter", "Missing required"),
        ([USER, {"role": "wizard", "content": "hi"}], "messages[1].role", "invalid_value", "'wizard'"),
        ([{"role": "function", "name": "f", "content": "1"}], "messages[0].role", "invalid_value", "'tool'"),
        ([{"role": "user"}], "messages[0].content", "missing_required_parameter", "Missing required"),
        ([USER, {"role": "assistant"}], "messages[1].content", "missing_required_parameter", "Missing"),
        ([{"role": "user", "content": 5}], "messages[0].content", "invalid_type", "got a number"),
        ([{"role": "user", "content": []}], "messages[0].content", "empty_array", "empty array"),
        ([{"role": "user", "content": ["hi"]}], "messages[0].content[0]", "invalid_type", "an object"),
        (
            [{"role": "user", "content": [{"text": "hi"}]}],
            "messages[0].content[0].type",
            "missing_required_parameter",
            "",
        ),
        (
            [{"role": "user", "content": [{"type": "video"}]}],
            "messages[0].content[0].type",
            "invalid_value",
            "'video'",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            "messages[0].content[0].text",
            "missing_required_parameter",
            "",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            "messages[0].content[0].text",
            "invalid_type",
            "",
        ),
        (
            [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}],
            "messages[0].content[0].type",
            "unsupported_value",
            "'text' and 'image_url'",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 3}}]}],
            "messages[0].content[0].image_url.url",
            "invalid_type",
            "",
        ),
        (
            [USER, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[1].content[0].type",
            "invalid_value",
            "only allowed in user messages",
        ),
        ([{"role": "user", "content": "hi", "name": 5}], "messages[0].name", "invalid_type", ""),
        (
            [USER, {"role": "tool", "content": "1"}],
            "messages[1].tool_call_id",
            "missing_required_parameter",
            "",
        ),
        (
            [USER, {"role": "tool", "content": "1", "tool_call_id": 7}],
            "messages[1].tool_call_id",
            "invalid_type",
            "",
        ),
    ],
)
def test_a_malformed_message_is_named_where_it_is(messages: list, param: str, code: str, words: str) -> None:
    with pytest.raises(MessageFormatError) as err:
        check_messages(messages)
    assert (err.value.param, err.value.code) == (param, code)
    assert param in str(err.value) and words in str(err.value)
