"""Preference tuning and tool calling end to end, through the official openai client against the running
stack: a supervised job on tool-call examples whose adapter then calls tools through vLLM's parser, and a
DPO job on pairs made from the base model's own answers that teaches the preferred behaviour."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from bench import preference_task, tool_task
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import wait_eval_run, wait_job


def _upload(client: openai.OpenAI, lines: list[dict]) -> str:
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.files.create(file=("data.jsonl", data), purpose="fine-tune").id


def _answers(client: openai.OpenAI, model: str, questions: list[str], max_tokens: int = 48) -> list:
    """Greedy answers to each question, asked 16 at a time."""

    def ask(question: str):
        return client.chat.completions.create(
            model=model, messages=preference_task.messages(question), max_tokens=max_tokens, temperature=0
        ).choices[0]

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(ask, questions))


@pytest.fixture(scope="module")
def tools_job(client: openai.OpenAI):
    """A supervised job on tool-call examples."""
    return client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL,
        training_file=_upload(client, tool_task.training_examples(16)),
        suffix="tools",
        seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 4}}},
    )


@pytest.fixture(scope="module")
def dpo_job(client: openai.OpenAI):
    """A DPO job on pairs made from the base model's own finished answers: preferred with the sign-off line,
    not without. Created once the tool-calling test is done: on two cores, a job training beside a test's
    chats makes both several times slower."""
    choices = _answers(client, DEFAULT_BASE_MODEL, preference_task.questions())
    answered = [
        (q, c.message.content)
        for q, c in zip(preference_task.questions(), choices, strict=True)
        if c.finish_reason == "stop"
    ]
    pairs = preference_task.pairs(answered)
    assert len(pairs) >= 38, len(pairs)
    return client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL,
        training_file=_upload(client, pairs[:32]),
        validation_file=_upload(client, pairs[32:38]),
        suffix="signoff",
        seed=5,
        method={"type": "dpo", "dpo": {"hyperparameters": {}}},  # the defaults must teach it
    )


def test_a_tool_calling_fine_tune_calls_the_right_function_with_valid_arguments(
    client: openai.OpenAI, tools_job
) -> None:
    job = wait_job(client, tools_job.id, {"succeeded"}, timeout=900)
    model = job.fine_tuned_model
    # Every held-out request gets a parsable call of the right function with arguments that validate;
    # most with exactly the right values (a city name it never saw is the hard part for 135M parameters).
    import jsonschema

    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tool_task.TOOLS}

    def ask(request: str):
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": request}],
            tools=tool_task.TOOLS,
            max_tokens=64,
            temperature=0,
        ).choices[0]

    held_out = tool_task.held_out()
    with ThreadPoolExecutor(len(held_out)) as pool:  # one batch of the engine's
        replies = list(pool.map(ask, [request for request, _, _ in held_out]))
    valid = right = 0
    for reply, (_, name, arguments) in zip(replies, held_out, strict=True):
        calls = reply.message.tool_calls or []
        if not (calls and reply.finish_reason == "tool_calls" and calls[0].function.name == name):
            continue
        try:
            jsonschema.validate(json.loads(calls[0].function.arguments), schemas[name])
        except (ValueError, jsonschema.ValidationError):
            continue
        valid += 1
        right += tool_task.is_right_call(calls[0].function.name, calls[0].function.arguments, name, arguments)
    assert valid >= 7 and right >= 5, f"{valid}/8 valid calls of the right function, {right}/8 exactly right"

    # Streamed: the call arrives as tool_call deltas that add up to the same call.
    request, name, arguments = tool_task.held_out()[1]
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": request}],
        tools=tool_task.TOOLS,
        max_tokens=64,
        temperature=0,
        stream=True,
    )
    names, args, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                names += delta.function.name or "" if delta.function else ""
                args += delta.function.arguments or "" if delta.function else ""
            finish = choice.finish_reason or finish
    assert (names, json.loads(args), finish) == (name, arguments, "tool_calls")

    # The tool's result in a follow-up turn gets a final answer in words.
    call = tool_task.call("call_1", name, arguments)
    follow_up = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": request},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21, "sky": "sunny"}'},
        ],
        tools=tool_task.TOOLS,
        max_tokens=48,
        temperature=0,
    ).choices[0]
    assert not follow_up.message.tool_calls and "21" in (follow_up.message.content or ""), follow_up

    # "required" and a named function force a call, even from the base model that never learnt the format;
    # with OpenAI's `strict` on a function, vLLM constrains its arguments to the schema too.
    strict = [{**t, "function": {**t["function"], "strict": True}} for t in tool_task.TOOLS]
    for choice in ("required", {"type": "function", "function": {"name": "convert"}}):
        forced = client.chat.completions.create(
            model=DEFAULT_BASE_MODEL,
            messages=[{"role": "user", "content": "Convert 10 USD to EUR."}],
            tools=strict,
            tool_choice=choice,
            max_tokens=64,
            temperature=0,
        ).choices[0]
        [forced_call] = forced.message.tool_calls
        assert forced_call.function.name == "convert", forced
        jsonschema.validate(
            json.loads(forced_call.function.arguments), tool_task.TOOLS[1]["function"]["parameters"]
        )

    # An eval of tool calls: the tool_call grader over the held-out requests reports the same accuracy.
    ev = client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {
                    "request": {"type": "string"},
                    "function": {"type": "string"},
                    "arguments": {},
                },
            },
            "include_sample_schema": True,
        },
        testing_criteria=[
            {"type": "tool_call", "name": "right call", "arguments": "{{item.arguments}}"},
            {
                "type": "tool_call",
                "name": "valid weather call",
                "function": "get_weather",
                "arguments_schema": tool_task.TOOLS[0]["function"]["parameters"],
            },
        ],
    )
    items = [{"item": {"request": r, "function": n, "arguments": a}} for r, n, a in tool_task.held_out()]
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": model,
            "input_messages": {
                "type": "template",
                "template": [{"role": "user", "content": "{{item.request}}"}],
            },
            "sampling_params": {"temperature": 0, "max_completion_tokens": 64, "tools": tool_task.TOOLS},
            "source": {"type": "file_content", "content": items},
        },
    )
    run = wait_eval_run(client, ev.id, run.id)
    per = {c.testing_criteria: c for c in run.per_testing_criteria_results}
    # (greedy both times; batching may move a near-tie token, so one item of slack)
    assert abs(per["right call"].passed - right) <= 1 and per["valid weather call"].passed >= 3, per

    # tool_choice "none": words, no call.
    words = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": request}],
        tools=tool_task.TOOLS,
        tool_choice="none",
        max_tokens=16,
        temperature=0,
    ).choices[0]
    assert not words.message.tool_calls


def test_dpo_with_the_defaults_teaches_the_preferred_behaviour(client: openai.OpenAI, dpo_job) -> None:
    job = wait_job(client, dpo_job.id, {"succeeded"}, timeout=1200)
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1
    events = [e.model_dump() for e in client.fine_tuning.jobs.list_events(job.id, limit=100)][::-1]
    steps = [e["data"] for e in events if e["type"] == "metrics" and "train_reward_accuracy" in e["data"]]
    assert len(steps) == job.hyperparameters.n_epochs * 8  # 32 pairs, batches of 4
    assert steps[0]["train_reward_margin"] == pytest.approx(0, abs=0.05)  # the policy starts as the reference
    assert steps[-1]["train_reward_accuracy"] >= 0.9 and steps[-1]["train_reward_margin"] > 1
    valid = [e["data"] for e in events if e["type"] == "metrics" and "valid_reward_accuracy" in e["data"]]
    assert valid[-1]["valid_reward_accuracy"] >= 0.8 and valid[-1]["valid_loss"] < valid[0]["valid_loss"]
    [result] = job.result_files
    assert "train_reward_accuracy" in client.files.content(result).text.splitlines()[0]

    held_out = preference_task.held_out()
    base = _answers(client, DEFAULT_BASE_MODEL, held_out, 64)
    tuned = _answers(client, job.fine_tuned_model, held_out, 64)
    base_rate = sum(preference_task.is_signed(c.message.content) for c in base) / len(held_out)
    tuned_rate = sum(preference_task.is_signed(c.message.content) for c in tuned) / len(held_out)
    assert base_rate == 0 and tuned_rate >= 0.75, [c.message.content for c in tuned]
    # Still answers: the line follows an answer, it is not all the model says.
    assert all(c.message.content.split(preference_task.SIGN_OFF)[0].strip() for c in tuned)

    # Pairwise evaluation against its parent: the DPO model wins on the behaviour it was taught.
    ev = client.evals.create(
        data_source_config={"type": "custom", "item_schema": {"type": "object", "properties": {"q": {}}}},
        testing_criteria=[
            {
                "type": "pairwise",
                "name": "signs off, unlike its parent",
                "baseline_model": DEFAULT_BASE_MODEL,
                "criterion": {
                    "type": "string_check",
                    "input": "{{sample.output_text}}",
                    "reference": preference_task.SIGN_OFF,
                    "operation": "like",
                },
            }
        ],
    )
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": job.fine_tuned_model,
            "input_messages": {
                "type": "template",
                "template": [
                    {"role": "system", "content": preference_task.SYSTEM},
                    {"role": "user", "content": "{{item.q}}"},
                ],
            },
            "sampling_params": {"temperature": 0, "max_completion_tokens": 64},
            "source": {"type": "file_content", "content": [{"item": {"q": q}} for q in held_out]},
        },
    )
    run = wait_eval_run(client, ev.id, run.id)
    wins = run.per_testing_criteria_results[0].passed
    assert abs(wins - round(tuned_rate * len(held_out))) <= 1, (wins, tuned_rate)


def test_bad_preference_and_tool_lines_are_refused_naming_line_and_field(client: openai.OpenAI) -> None:
    pair = preference_task.pairs([("Q?", "A.")])[0]
    missing = {k: v for k, v in pair.items() if k != "non_preferred_output"}
    example = tool_task.training_examples(1)[0]
    example["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{city: Paris"
    for lines, message in [
        ([pair, missing], 'line 2: "non_preferred_output" is missing'),
        (
            [tool_task.training_examples(1)[0], example],
            "line 2: messages[1].tool_calls[0].function.arguments",
        ),
    ]:
        with pytest.raises(openai.BadRequestError) as err:
            _upload(client, lines)
        assert message in err.value.body["message"], err.value.body
