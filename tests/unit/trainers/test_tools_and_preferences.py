"""Tool calls and preference (DPO) lines in training data: what parses, how it is rendered for a template
without tools, what is trained on, and every malformed line named with its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import tool_task
from service.protocol.tool_format import as_text_messages, renders_tools, tool_call_text
from trainers.data_format import DatasetError, parse_jsonl
from trainers.tokenization import IGNORE_INDEX, tokenize_all

MODEL = Path(__file__).resolve().parents[3] / "data" / "models" / "SmolLM2-135M-Instruct"
TOOLS = tool_task.TOOLS
CALL = tool_task.call("c1", "get_weather", {"city": "Paris"})
TOOL_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sky": "sunny"}'},
        {"role": "assistant", "content": "Sunny in Paris."},
    ],
    "tools": TOOLS,
}
PAIR = {
    "input": {"messages": [{"role": "user", "content": "Hi"}]},
    "preferred_output": [{"role": "assistant", "content": "Hello!\n\n-- Ada"}],
    "non_preferred_output": [{"role": "assistant", "content": "Hello!"}],
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL)


def test_tool_calls_and_results_parse() -> None:
    [example] = parse_jsonl(json.dumps(TOOL_CHAT).encode())
    assert [t["function"]["name"] for t in example.tools] == ["get_weather", "convert"]
    call = example.messages[1]
    assert call.content == "" and call.tool_calls[0]["function"]["name"] == "get_weather"
    assert example.messages[2].tool_call_id == "c1"


def test_text_format_for_a_template_without_tools() -> None:
    messages = [m.as_openai() for m in parse_jsonl(json.dumps(TOOL_CHAT).encode())[0].messages]
    rendered = as_text_messages(messages, TOOLS)
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user", "assistant"]
    assert '"name": "get_weather"' in rendered[0]["content"] and "<tools>" in rendered[0]["content"]
    assert (
        rendered[2]["content"]
        == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert rendered[3]["content"] == '<tool_response>\n{"sky": "sunny"}\n</tool_response>'
    # A system message of the conversation keeps its text ahead of the tools; two results make one turn.
    two = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "", "tool_calls": [CALL, {**CALL, "id": "c2"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a"},
        {"role": "tool", "tool_call_id": "c2", "content": "b"},
    ]
    out = as_text_messages(two, TOOLS)
    assert out[0]["content"].startswith("Be brief.\n\n# Tools")
    assert out[1]["content"].count("<tool_call>") == 2
    assert out[2] == {
        "role": "user",
        "content": "<tool_response>\na\n</tool_response>\n<tool_response>\nb\n</tool_response>",
    }
    # Without tools and tool turns, nothing changes.
    plain = [{"role": "user", "content": "hi"}]
    assert as_text_messages(plain, None) == plain


def test_templates_that_render_tools_are_recognised() -> None:
    assert renders_tools("{% if tools %}{{ tools | tojson }}{% endif %}")
    assert not renders_tools((MODEL / "chat_template.jinja").read_text())
    assert not renders_tools(None)


def test_loss_on_tool_calls_and_answers_not_on_tool_results(tokenizer) -> None:
    [tok] = tokenize_all(tokenizer, parse_jsonl(json.dumps(TOOL_CHAT).encode()), 1024)
    trained = tokenizer.decode([t for t in tok.labels if t != IGNORE_INDEX])
    assert tool_call_text(CALL) in trained and "Sunny in Paris." in trained
    assert "sunny" not in trained.replace("Sunny", "") and "<tools>" not in trained
    assert "<tool_response>" in tokenizer.decode(tok.input_ids)


def test_a_preference_pair_trains_each_output_only(tokenizer) -> None:
    [example] = parse_jsonl(json.dumps(PAIR).encode())
    assert example.is_preference and example.messages[0].content == "Hi"
    [pair] = tokenize_all(tokenizer, [example], 1024)
    chosen = tokenizer.decode([t for t in pair.chosen.labels if t != IGNORE_INDEX])
    rejected = tokenizer.decode([t for t in pair.rejected.labels if t != IGNORE_INDEX])
    assert chosen.startswith("Hello!\n\n-- Ada<|im_end|>") and rejected.startswith("Hello!<|im_end|>")
    shared = len(pair.chosen.input_ids) - sum(t != IGNORE_INDEX for t in pair.chosen.labels)
    assert pair.chosen.input_ids[:shared] == pair.rejected.input_ids[:shared]  # the same input


def _without(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


def _call_with(**function: object) -> dict:
    chat = json.loads(json.dumps(TOOL_CHAT))
    chat["messages"][1]["tool_calls"][0]["function"].update(function)
    return chat


@pytest.mark.parametrize(
    "bad, message",
    [
        (_without(PAIR, "non_preferred_output"), '"non_preferred_output" is missing'),
        ({**PAIR, "preferred_output": PAIR["non_preferred_output"]}, "are the same"),
        (
            {**PAIR, "preferred_output": [{"role": "user", "content": "x"}]},
            "may only hold assistant messages",
        ),
        (
            {
                **PAIR,
                "input": {
                    "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
                },
            },
            "input.messages ends with an assistant message",
        ),
        (
            _call_with(arguments="{city: Paris"),
            "messages[1].tool_calls[0].function.arguments is not valid JSON",
        ),
        (_call_with(arguments='"Paris"'), "arguments must be a JSON object"),
        (_call_with(name="get_time"), "'get_time' is not one of the example's tools"),
        (_without(TOOL_CHAT, "tools"), 'messages[1].tool_calls needs the example\'s "tools"'),
        (
            {
                **TOOL_CHAT,
                "messages": [*TOOL_CHAT["messages"][:2], {**TOOL_CHAT["messages"][2], "tool_call_id": "c9"}],
            },
            "messages[2].tool_call_id 'c9' answers no earlier tool call",
        ),
        (
            {
                **TOOL_CHAT,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}],
            },
            "tools[0].function.parameters is not a valid JSON schema",
        ),
        (
            {**TOOL_CHAT, "tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        (
            {
                **TOOL_CHAT,
                "parallel_tool_calls": False,
                "messages": [
                    TOOL_CHAT["messages"][0],
                    {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "c2"}]},
                ],
            },
            "parallel_tool_calls is false",
        ),
    ],
)
def test_bad_tool_and_preference_lines_name_line_and_field(bad: dict, message: str) -> None:
    good = json.dumps(TOOL_CHAT)
    with pytest.raises(DatasetError) as err:
        parse_jsonl(f"{good}\n{json.dumps(bad)}\n".encode())
    assert err.value.line == 2 and message in str(err.value), str(err.value)


# The same conversation in OpenAI's deprecated function-calling format.
LEGACY_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "function_call": CALL["function"]},
        {"role": "function", "name": "get_weather", "content": '{"sky": "sunny"}'},
        {"role": "assistant", "content": "Sunny in Paris."},
    ],
    "functions": [tool["function"] for tool in TOOLS],
}


def test_the_deprecated_function_calling_format_reads_as_tools(tokenizer) -> None:
    [legacy] = parse_jsonl(json.dumps(LEGACY_CHAT).encode())
    # The call gets an id of its own, and the function's result answers it.
    as_tools = json.loads(json.dumps(TOOL_CHAT).replace('"c1"', '"call_1"'))
    [current] = parse_jsonl(json.dumps(as_tools).encode())
    assert legacy == current
    # What is trained on is the same text as for the tools line.
    [a] = tokenize_all(tokenizer, [legacy], 1024)
    [b] = tokenize_all(tokenizer, parse_jsonl(json.dumps(TOOL_CHAT).encode()), 1024)
    assert (a.input_ids, a.labels) == (b.input_ids, b.labels)


def _legacy_message(i: int, **fields: object) -> dict:
    chat = json.loads(json.dumps(LEGACY_CHAT))
    chat["messages"][i] = {**chat["messages"][i], **fields}
    return chat


@pytest.mark.parametrize(
    "bad, message",
    [
        ({**LEGACY_CHAT, "tools": TOOLS}, '"functions" (deprecated) and "tools" cannot both be given'),
        (_legacy_message(2, name="convert"), "messages[2] answers function 'convert', which no earlier"),
        (_legacy_message(1, function_call="get_weather"), 'messages[1].function_call must be {"name"'),
        (_legacy_message(1, tool_calls=[CALL]), "messages[1] has both function_call and tool_calls"),
        ({**LEGACY_CHAT, "functions": [{"name": "bad name"}]}, "functions[0].name must be 1-64 letters"),
        ({**LEGACY_CHAT, "functions": "get_weather"}, '"functions" must be a non-empty list'),
        (_without(LEGACY_CHAT, "functions"), 'function_call needs the example\'s "functions"'),
    ],
)
def test_bad_deprecated_function_lines_name_line_and_field(bad: dict, message: str) -> None:
    with pytest.raises(DatasetError) as err:
        parse_jsonl(f"{json.dumps(LEGACY_CHAT)}\n{json.dumps(bad)}\n".encode())
    assert err.value.line == 2 and message in str(err.value), str(err.value)


def test_a_template_that_renders_tools_gets_them_as_they_are(tokenizer) -> None:
    import copy

    from trainers.tokenization import render_chat

    native = copy.copy(tokenizer)
    native.chat_template = (
        "{% if tools %}TOOLS:{{ tools | map(attribute='function.name') | join(',') }}\n{% endif %}"
        "{% for m in messages %}{{ m.role }}:{% if m.tool_calls %}"
        "{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments.city }}{% endfor %}"
        "{% else %}{{ m.content }}{% endif %}\n{% endfor %}"
    )
    messages = [m.as_openai() for m in parse_jsonl(json.dumps(TOOL_CHAT).encode())[0].messages]
    text = render_chat(native, messages, TOOLS, generation_prompt=False)
    # The template's own rendering: tools by name, the call's arguments as an object (not a JSON string).
    assert text.startswith(
        "TOOLS:get_weather,convert\nuser:Weather in Paris?assistant:CALL get_weather Paristool:"
    )
    assert "<tool_call>" not in text


def test_vision_bases_refuse_what_their_recipe_does_not_do_yet() -> None:
    from service.fine_tuning.dataset_check import check_dataset

    vlm = MODEL.parent / "SmolLM2-135M-LLaVA"
    with pytest.raises(DatasetError, match="line 1: tool calling is not available for vision-language"):
        check_dataset(vlm, json.dumps(TOOL_CHAT).encode(), 1024)
    with pytest.raises(DatasetError, match="DPO is not available for vision-language base models"):
        check_dataset(vlm, json.dumps(PAIR).encode(), 1024, method="dpo")
