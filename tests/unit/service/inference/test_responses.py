"""The Responses API as a translation of chat completions: requests become chat requests, chat answers (whole
or streamed) become response objects and the Responses stream's events, and what needs stored state or
OpenAI's own tools is a 400 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from service.protocol.response_output import ItemIds, ResponseStream, from_chat
from service.protocol.responses import ResponsesInputError, input_param, to_chat
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_a_request_becomes_the_chat_request_that_answers_it() -> None:
    assert to_chat({"model": "m", "input": "Hi"}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    request = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "Weather "}, {"type": "input_text", "text": "?"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "file_id": "file-1"},
                    {"type": "input_text", "text": "And?"},
                ],
            },
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "max_output_tokens": 16,
        "temperature": 0,
        "text": {
            "format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}
        },
        "stream": True,
        "ignore_eos": True,
        "store": True,  # answered false: nothing is passed on for it
    }
    chat = to_chat(request)
    assert chat["ignore_eos"] is True and "store" not in chat
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather ?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "file-1"}},
                {"type": "text", "text": "And?"},
            ],
        },
    ]
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["parameters"]}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (chat["max_completion_tokens"], chat["temperature"], chat["stream"]) == (16, 0, True)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": None}]}]},
            "input[0].content[0].text",
        ),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_what_cannot_be_answered_here_names_its_field(extra: dict, param: str) -> None:
    with pytest.raises(ResponsesInputError) as caught:
        to_chat({"model": "m", "input": "Hi", **extra})
    assert caught.value.param == param


def test_a_whole_chat_answer_becomes_a_response_object() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    chat = {
        "created": 1700000000,
        "choices": [
            {
                "message": {"role": "assistant", "content": "Let me look.", "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    request = {"model": "m", "input": "Weather in Oslo?", "tools": [TOOL]}
    response = from_chat(request, chat, "resp_x", ItemIds("resp_x"))
    assert (
        response["object"] == "response" and response["status"] == "completed" and response["store"] is True
    )
    assert from_chat({**request, "store": False}, chat, "resp_x", ItemIds("resp_x"))["store"] is False
    assert response["output"] == [
        {
            "type": "message",
            "id": "msg_x",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}],
        },
        {
            "type": "function_call",
            "id": "fc_x_c1",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
            "status": "completed",
        },
    ]
    assert response["usage"]["input_tokens"] == 7 and response["usage"]["output_tokens"] == 3
    assert response["tools"] == [TOOL] and response["created_at"] == 1700000000
    cut = {**chat, "choices": [{"message": {"content": "Let"}, "finish_reason": "length"}]}
    truncated = from_chat(request, cut, "resp_x", ItemIds("resp_x"))
    assert truncated["status"] == "incomplete" and truncated["incomplete_details"] == {
        "reason": "max_output_tokens"
    }


def _delta(**delta: object) -> dict:
    return {"choices": [{"index": 0, "delta": delta}]}


def test_a_streamed_answer_becomes_the_responses_events_in_order() -> None:
    stream = ResponseStream({"model": "m", "input": "Hi"}, "resp_s")
    events = stream.start()
    events += stream.feed(_delta(role="assistant", content="Hel"))
    events += stream.feed(_delta(content="lo"))
    events += stream.feed(
        _delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}])
    )
    events += stream.feed(_delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a": '}}]))
    events += stream.feed(_delta(tool_calls=[{"index": 0, "function": {"arguments": "1}"}}]))
    events += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    events += stream.feed({"choices": [], "usage": USAGE})
    events += stream.finish()
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[6]["text"] == "Hello" and events[12]["arguments"] == '{"a": 1}'
    assert [e["output_index"] for e in events[2:14]] == [0] * 7 + [1] * 5
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert (
        final["output"][0]["content"][0]["text"] == "Hello" and final["output"][1]["arguments"] == '{"a": 1}'
    )
    assert final["usage"]["total_tokens"] == 10 and final["status"] == "completed"


def test_a_stream_cut_by_the_token_limit_ends_incomplete() -> None:
    stream = ResponseStream({"model": "m", "input": "Hi", "max_output_tokens": 1}, "resp_s")
    events = stream.start() + stream.feed(
        {"choices": [{"index": 0, "delta": {"content": "A"}, "finish_reason": "length"}]}
    )
    last = stream.finish()[-1]
    assert last["type"] == "response.incomplete" and last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"} and len(events) == 5


def test_the_endpoint_answers_400s_naming_the_field(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path), store=MemoryStore(), engine=FakeEngine({DEFAULT_BASE_MODEL}))
    with TestClient(app, headers=auth(ADMIN)) as client:
        body = {"model": DEFAULT_BASE_MODEL, "input": "Hi", "previous_response_id": "resp_1"}
        err = assert_openai_error(client.post("/v1/responses", json=body), 404, "response_not_found")
        assert err["param"] == "previous_response_id" and "resp_1" in err["message"]
        err = assert_openai_error(client.post("/v1/responses", json={"model": DEFAULT_BASE_MODEL}), 400)
        assert err["param"] == "input"
        missing = {"model": "no-such-model", "input": "Hi"}
        assert (
            assert_openai_error(client.post("/v1/responses", json=missing), 404, "model_not_found")["param"]
            == "model"
        )


CITATIONS = [
    {"index": 1, "file_id": "file-a", "filename": "owls.txt", "score": 0.9, "text": "Owls hunt at night."},
    {"index": 2, "file_id": "file-a", "filename": "owls.txt", "score": 0.7, "text": "Owls eat mice."},
    {"index": 3, "file_id": "file-b", "filename": "cats.txt", "score": 0.5, "text": "Cats sleep."},
]
SEARCH = {"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": 3}


def test_a_file_search_tool_is_the_services_own_retrieval() -> None:
    chat = to_chat({"model": "m", "input": "When do owls hunt?", "tools": [SEARCH, TOOL]})
    assert chat["retrieval"] == {"vector_store_ids": ["vs_1"], "max_num_results": 3, "filters": None}
    assert [t["function"]["name"] for t in chat["tools"]] == ["get_weather"]
    for tools, param in [
        ([SEARCH, SEARCH], "tools[1]"),
        ([{**SEARCH, "max_num_results": 50}], "tools[0].max_num_results"),
        ([{**SEARCH, "vector_store_ids": []}], "tools[0].vector_store_ids"),
    ]:
        with pytest.raises(ResponsesInputError) as caught:
            to_chat({"model": "m", "input": "Hi", "tools": tools})
        assert caught.value.param == param


def test_what_was_found_is_a_search_item_and_the_answer_cites_its_files() -> None:
    request = {"model": "m", "input": [{"role": "user", "content": "When do owls hunt?"}], "tools": [SEARCH]}
    chat = {
        "choices": [{"message": {"content": "At night."}, "finish_reason": "stop"}],
        "citations": CITATIONS,
    }
    output = from_chat(request, chat, "resp_r", ItemIds("resp_r"))["output"]
    assert output[0] == {
        "type": "file_search_call",
        "id": "fs_r",
        "status": "completed",
        "queries": ["When do owls hunt?"],
        "results": None,
    }
    assert output[1]["content"][0]["annotations"] == [
        {"type": "file_citation", "file_id": "file-a", "filename": "owls.txt", "index": 9},
        {"type": "file_citation", "file_id": "file-b", "filename": "cats.txt", "index": 9},
    ]
    included = from_chat(
        {**request, "include": ["file_search_call.results"]}, chat, "resp_r", ItemIds("resp_r")
    )
    results = included["output"][0]["results"]
    assert [(r["file_id"], r["text"]) for r in results] == [(c["file_id"], c["text"]) for c in CITATIONS]

    stream = ResponseStream(request, "resp_r")
    first = {**_delta(role="assistant", content="At"), "citations": CITATIONS}
    events = stream.start() + stream.feed(first) + stream.feed(_delta(content=" night.")) + stream.finish()
    assert [e["type"] for e in events[2:8]] == [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
        "response.output_item.added",
    ]
    final = events[-1]["response"]["output"]
    assert final[0]["type"] == "file_search_call" and final[0]["status"] == "completed"
    assert final[1]["content"][0]["text"] == "At night." and len(final[1]["content"][0]["annotations"]) == 2


def test_the_chat_paths_errors_name_the_requests_own_fields() -> None:
    request = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": "{}"},  # joins messages[1]
            {"type": "function_call_output", "call_id": "c1", "output": "x"},
            {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
        ],
    }
    assert input_param("messages[3].content[0].image_url", request) == "input[3].content[0].image_url"
    assert input_param("messages[0]", request) == "instructions"
    assert input_param("messages[2].content", request) == "input[2].content"
    assert input_param("messages", request) == "input"
    assert input_param("top_p", request) == "top_p" and input_param(None, request) is None
    assert input_param("messages[0]", {"model": "m", "input": "Hi"}) == "input"
