"""Evaluations through the official openai client on the shared stack: the real SmolLM2 in vLLM, runs as
Ray tasks calling the API, graders of every kind, bad input, cancel, and lm-evaluation-harness against the
same API. Fine-tuning jobs that evaluate their result are in test_fine_tuning.py; RAG evals in test_rag.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from evals import metrics, suites
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import MODELS_DIR, REPO, RunningStack, eval_of_samples, wait_eval_run

BASE = DEFAULT_BASE_MODEL
ITEM_SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
ITEMS = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is the capital of Japan?", "answer": "Tokyo"},
    {"question": "What is the capital of Italy?", "answer": "Rome"},
]
TEMPLATE = {"type": "template", "template": [{"role": "user", "content": "{{item.question}}"}]}


def post(stack: RunningStack, path: str, body: dict, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or stack.admin_key}"}
    return httpx.post(stack.base_url + path, json=body, headers=headers, timeout=60)


def all_items(client: openai.OpenAI, eval_id: str, run_id: str) -> list:
    return list(client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=100))


def test_cli_runs_a_suite_and_multiple_choice_knows_easy_items(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    proc = stack.cli("evals", "run", "--suite", "easy-choices", "--model", BASE, timeout=600)
    assert "20/20" in proc.stderr  # the progress bar
    run = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert run["status"] == "completed"
    counts = run["result_counts"]
    # By log-likelihood alone (no sampling), the 135M model picks the obvious ending almost always.
    assert counts["total"] == 20 and counts["errored"] == 0 and counts["passed"] >= 18, counts
    items_by_q = {i.datasource_item["question"]: i for i in all_items(client, run["eval_id"], run["id"])}
    for easy in ("The capital of France is", "Snow is", "Two plus two equals"):
        [result] = items_by_q[easy].results
        assert result.passed and result.model_extra["choice"] == 0, result
        assert result.model_extra["logliks"][0] > max(result.model_extra["logliks"][1:])
    # The same suite again reuses the caller's eval of it: its runs can be compared.
    again = stack.cli("evals", "run", "--suite", "easy-choices", "--model", BASE, "--detach")
    assert f"of {run['eval_id']}" in again.stdout
    # `evals suites` lists what ships; `evals run --eval ID --items FILE` runs an eval on one's own items.
    listed = {s["name"]: s for s in json.loads(stack.cli("evals", "suites").stdout)}
    assert listed["easy-choices"]["items"] == 20 and listed["easy-choices"]["license"]
    items = tmp_path / "mine.jsonl"
    items.write_text("".join(json.dumps(i.datasource_item) + "\n" for i in list(items_by_q.values())[:3]))
    own = stack.cli(
        "evals", "run", "--eval", run["eval_id"], "--items", str(items), "--model", BASE, timeout=300
    )
    mine = json.loads(own.stdout[own.stdout.index("{") :])
    assert mine["status"] == "completed" and mine["result_counts"]["total"] == 3, own.stdout


def test_custom_eval_with_openai_graders(client: openai.OpenAI) -> None:
    ev = client.evals.create(
        name="capitals",
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        testing_criteria=[
            {
                "type": "string_check",
                "name": "mentions",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "ilike",
            },
            {
                "type": "text_similarity",
                "name": "rouge",
                "input": "{{sample.output_text}}",
                "reference": "The capital is {{item.answer}}.",
                "evaluation_metric": "rouge_l",
                "pass_threshold": 0.3,
            },
            {
                "type": "text_similarity",
                "name": "cosine",
                "input": "{{sample.output_text}}",
                "reference": "The capital is {{item.answer}}.",
                "evaluation_metric": "cosine",
                "pass_threshold": 0.5,
            },
            {
                "type": "label_model",
                "name": "judge label",
                "model": BASE,
                "input": [
                    {"role": "system", "content": "Answer with one word: yes or no."},
                    {"role": "user", "content": "Is Paris in France? {{sample.output_text}}"},
                ],
                "labels": ["yes", "no"],
                "passing_labels": ["yes"],
            },
            {
                "type": "score_model",
                "name": "judge score",
                "model": BASE,
                "input": [{"role": "user", "content": "Rate from 1 to 5: {{sample.output_text}} Score:"}],
                "range": [1, 5],
            },
        ],
    )
    assert ev.data_source_config.schema_["properties"]["item"] == ITEM_SCHEMA
    too_long = {"question": "word " * 5000, "answer": "x"}  # over the served 4096 tokens
    run = client.evals.runs.create(
        ev.id,
        name="base",
        data_source={
            "type": "completions",
            "model": BASE,
            "input_messages": TEMPLATE,
            "sampling_params": {"temperature": 0, "max_completion_tokens": 24, "seed": 1},
            "source": {"type": "file_content", "content": [{"item": i} for i in [*ITEMS, too_long]]},
        },
    )
    assert run.status in ("queued", "in_progress") and run.model == BASE
    run = wait_eval_run(client, ev.id, run.id)
    assert run.status == "completed", run.error
    # The item the model refused is errored; the others ran and were graded by every criterion (an item
    # whose judge gives no parsable verdict is errored too: the 135M judge is no judge).
    assert run.result_counts.total == 4 and run.result_counts.errored >= 1
    per = {c.testing_criteria: c for c in run.per_testing_criteria_results}
    assert set(per) == {"mentions", "rouge", "cosine", "judge label", "judge score"}
    assert per["mentions"].passed >= 2 and per["mentions"].failed + per["mentions"].passed == 3
    # Embedding similarity (the MiniLM embedder of vector stores): the right answers are close to the reference.
    assert per["cosine"].passed >= 2 and 0 < per["cosine"].model_extra["mean_score"] <= 1
    assert all(c.passed + c.failed + c.model_extra["errored"] == 3 for c in per.values())
    assert run.per_model_usage[0].invocation_count == 3 and run.per_model_usage[0].completion_tokens > 0

    items = all_items(client, ev.id, run.id)
    assert [i.datasource_item_id for i in items] == [0, 1, 2, 3]
    bad = items[3]
    assert bad.status == "error" and "4096" in bad.sample.error.message and not bad.results, bad.sample
    paris = items[0]
    assert "Paris" in paris.sample.output[0].content and paris.sample.input[0].content == ITEMS[0]["question"]
    # The judge was asked, and its verdict is what its answer says (or an error saying it says none).
    judged = {r.name: r for r in paris.results if r.name.startswith("judge")}
    label, score = judged["judge label"], judged["judge score"]
    assert label.sample["output_text"].strip() and score.sample["output_text"].strip()
    said = metrics.parse_label(label.sample["output_text"], ["yes", "no"])
    if said is None:
        assert "names none of the labels" in label.model_extra["error"] and not label.passed
    else:
        assert (
            label.sample["label"] == said and label.passed == (said == "yes") and label.score == label.passed
        )
    rated = metrics.parse_score(score.sample["output_text"], 1, 5)
    if rated is None:
        assert "has no score" in score.model_extra["error"] and not score.passed
    else:
        assert score.score == rated and not score.model_extra.get("error")
    errored = client.evals.runs.output_items.list(run.id, eval_id=ev.id, status="error").data
    assert bad.id in [i.id for i in errored] and len(errored) == run.result_counts.errored

    # Updating changes the name, not the criteria; listing and deleting.
    assert client.evals.update(ev.id, name="capitals v2").name == "capitals v2"
    assert ev.id in [e.id for e in client.evals.list(limit=100)]
    assert [r.id for r in client.evals.runs.list(ev.id)] == [run.id]
    assert client.evals.runs.delete(run.id, eval_id=ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert client.evals.delete(ev.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(ev.id)


def test_items_from_an_uploaded_file_and_json_graders(client: openai.OpenAI) -> None:
    lines = [
        json.dumps({"item": {"question": "Give a JSON object with key answer set to yes.", "answer": "yes"}})
    ]
    file = client.files.create(file=("items.jsonl", "\n".join(lines * 3).encode()), purpose="evals")
    ev = client.evals.create(
        data_source_config={"type": "custom", "item_schema": ITEM_SCHEMA},
        testing_criteria=[
            {"type": "json_check", "name": "json", "schema": {"type": "object", "required": ["answer"]}},
            {
                "type": "string_check",
                "name": "regex",
                "input": "{{sample.output_text}}",
                "reference": r"\byes\b",
                "operation": "regex",
            },
        ],
    )
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": BASE,
            "input_messages": TEMPLATE,
            # Structured output: vLLM constrains the answer to the schema, so every sample is valid JSON.
            "sampling_params": {
                "temperature": 0,
                "max_completion_tokens": 32,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "a",
                        "schema": {
                            "type": "object",
                            "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                            "required": ["answer"],
                        },
                    },
                },
            },
            "source": {"type": "file_id", "id": file.id},
        },
    )
    run = wait_eval_run(client, ev.id, run.id)
    per = {c.testing_criteria: c for c in run.per_testing_criteria_results}
    assert run.result_counts.total == 3 and per["json"].passed == 3, [
        i.sample for i in all_items(client, ev.id, run.id)
    ]
    assert all(
        i.sample.model_extra["output_json"]["answer"] in ("yes", "no")
        for i in all_items(client, ev.id, run.id)
    )


def test_an_eval_of_given_samples_pages_its_output_items(feature_client: openai.OpenAI) -> None:
    """A run over samples the items bring (no model): graded, counted, its output items paged in order."""
    client = feature_client
    eval_id, run_id = eval_of_samples(client, ["yes" if i % 2 else "no" for i in range(10)])
    run = wait_eval_run(client, eval_id, run_id)
    assert run.status == "completed" and run.result_counts.passed == 5 and run.result_counts.failed == 5
    first = client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=4)
    rest = client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=10, after=first.data[-1].id)
    assert [i.datasource_item_id for i in first.data + rest.data] == list(range(10))
    assert [i.results[0].passed for i in rest.data] == [i % 2 == 1 for i in range(4, 10)]


def test_bad_input_is_refused_before_anything_runs(client: openai.OpenAI, stack: RunningStack) -> None:

    def refused(status: int, fn, *args, **kw) -> dict:
        with pytest.raises(openai.APIStatusError) as err:
            fn(*args, **kw)
        assert err.value.status_code == status, err.value.body
        return err.value.body

    config = {"type": "custom", "item_schema": ITEM_SCHEMA}
    check = {
        "type": "string_check",
        "name": "a",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": "eq",
    }
    evals_before = len(client.evals.list(limit=100).data)
    body = refused(
        400, client.evals.create, data_source_config=config, testing_criteria=[{**check, "operation": "same"}]
    )
    assert body["param"] == "testing_criteria[0].operation"
    body = refused(
        400,
        client.evals.create,
        data_source_config=config,
        testing_criteria=[{**check, "reference": "{{item.anwser}}"}],
    )
    assert "anwser" in body["message"] and body["param"] == "testing_criteria[0]"
    body = refused(
        400, client.evals.create, data_source_config=config, testing_criteria=[{**check, "type": "python"}]
    )
    assert "unknown grader type" in body["message"]
    body = refused(400, client.evals.create, data_source_config=config, testing_criteria=[check, check])
    assert "used twice" in body["message"]
    judge = {
        "type": "score_model",
        "name": "j",
        "model": "no-such-model",
        "input": [{"role": "user", "content": "x"}],
    }
    assert (
        refused(404, client.evals.create, data_source_config=config, testing_criteria=[judge])["param"]
        == "testing_criteria[0].model"
    )
    body = refused(
        400,
        client.evals.create,
        data_source_config={"type": "custom", "item_schema": {"type": "nonsense"}},
        testing_criteria=[check],
    )
    assert body["param"] == "data_source_config.item_schema"
    assert post(stack, "/v1/evals", {"suite": "no-such-suite"}).status_code == 404
    assert len(client.evals.list(limit=100).data) == evals_before

    ev = client.evals.create(data_source_config=config, testing_criteria=[check])
    source = {
        "type": "file_content",
        "content": [{"item": ITEMS[0]}, {"item": {"question": "x", "answer": 3}}],
    }
    ds = {"type": "completions", "model": BASE, "input_messages": TEMPLATE, "source": source}
    body = refused(400, client.evals.runs.create, ev.id, data_source=ds)
    assert "Item 1" in body["message"] and "answer: 3 is not of type 'string'" in body["message"]
    assert body["param"] == "data_source.source.content[1]"
    good = {**ds, "source": {"type": "file_content", "content": [{"item": ITEMS[0]}]}}
    assert (
        refused(404, client.evals.runs.create, ev.id, data_source={**good, "model": "nope"})["param"]
        == "data_source.model"
    )
    assert (
        refused(
            400, client.evals.runs.create, ev.id, data_source={**good, "sampling_params": {"temprature": 0}}
        )["param"]
        == "data_source.sampling_params"
    )
    bad_template = {"type": "template", "template": [{"role": "user", "content": "{{item.query}}"}]}
    assert (
        "item.query"
        in refused(
            400, client.evals.runs.create, ev.id, data_source={**good, "input_messages": bad_template}
        )["message"]
    )
    no_messages = {k: v for k, v in good.items() if k != "input_messages"}
    assert (
        refused(400, client.evals.runs.create, ev.id, data_source=no_messages)["param"]
        == "data_source.input_messages"
    )
    wrong_purpose = client.files.create(file=("x.txt", b"hello"), purpose="assistants")
    body = refused(
        400,
        client.evals.runs.create,
        ev.id,
        data_source={**good, "source": {"type": "file_id", "id": wrong_purpose.id}},
    )
    assert "purpose" in body["message"]
    broken = client.files.create(
        file=("e.jsonl", json.dumps({"item": ITEMS[0]}).encode() + b"\n{oops\n"), purpose="evals"
    )
    body = refused(
        400,
        client.evals.runs.create,
        ev.id,
        data_source={**good, "source": {"type": "file_id", "id": broken.id}},
    )
    assert "line 2" in body["message"]
    refused(404, client.evals.runs.create, "eval_nope", data_source=good)
    assert client.evals.runs.list(ev.id).data == []  # nothing was queued

    # Another tenant's eval does not exist for this one.
    key = json.loads(stack.cli("keys", "create", "--tenant", "evals-other").stdout)["key"]
    other = stack.client(key)
    refused(404, other.evals.retrieve, ev.id)
    refused(404, other.evals.runs.create, ev.id, data_source=good)
    assert ev.id not in [e.id for e in other.evals.list().data]


def test_cancel_keeps_what_was_graded(client: openai.OpenAI, stack: RunningStack) -> None:
    suite = suites.load("world-capitals")
    ev = client.evals.create(
        data_source_config={"type": "custom", "item_schema": suite.data_source_config["item_schema"]},
        testing_criteria=suite.testing_criteria,
    )
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": BASE,
            "input_messages": suite.input_messages,
            "sampling_params": {"temperature": 0, "max_completion_tokens": 64, "stop": ["@@@"]},
            "source": {"type": "file_content", "content": suite.items() * 8},  # 320 answers, minutes
        },
    )
    deadline = time.monotonic() + 120
    while client.evals.runs.retrieve(run.id, eval_id=ev.id).model_extra["progress"]["completed"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    canceled = client.evals.runs.cancel(run.id, eval_id=ev.id)
    assert canceled.status == "canceled"
    # The batches in flight finish (their items are dropped) and the run's driver ends: its key is revoked.
    deadline = time.monotonic() + 120
    while not ((keys := _run_keys(stack, run.id)) and all(k["revoked_at"] for k in keys)):
        assert time.monotonic() < deadline, "the canceled run is still being driven"
        time.sleep(0.5)
    run = client.evals.runs.retrieve(run.id, eval_id=ev.id)
    assert run.status == "canceled" and 0 < run.result_counts.total < 320
    assert len(all_items(client, ev.id, run.id)) == run.result_counts.total  # the client pages through
    with pytest.raises(openai.ConflictError):
        client.evals.runs.cancel(run.id, eval_id=ev.id)


def _run_keys(stack: RunningStack, run_id: str) -> list[dict]:
    """The API keys made for an evaluation run (named `eval-run:<id>`)."""
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    keys = httpx.get(stack.base_url + "/v1/admin/api_keys", headers=headers, timeout=30).json()["data"]
    return [k for k in keys if k["name"] == f"eval-run:{run_id}"]


def _lm_eval(
    stack: RunningStack, tmp_path: Path, backend: str, endpoint: str, task: str, *extra: str
) -> dict:
    """Run lm-evaluation-harness (`lm_eval`) against the stack; returns its results JSON."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / f"{task}.yaml").write_text(TASKS[task])
    env = {**os.environ, "OPENAI_API_KEY": stack.admin_key, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    model_args = f"model={BASE},base_url={stack.base_url}/v1/{endpoint},num_concurrent=4"
    if backend == "local-completions":
        model_args += f",tokenizer_backend=huggingface,tokenizer={MODELS_DIR / BASE}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            backend,
            "--model_args",
            model_args,
            "--tasks",
            task,
            "--include_path",
            str(tmp_path),
            "--output_path",
            str(tmp_path / "out"),
            "--log_samples",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [results] = (tmp_path / "out").rglob("results_*.json")
    [samples] = (tmp_path / "out").rglob(f"samples_{task}_*.jsonl")
    return {
        **json.loads(results.read_text())["results"][task],
        "samples": [json.loads(x) for x in samples.read_text().splitlines()],
    }


SUITES_DIR = REPO / "evals" / "suites"
TASKS = {
    "tuneserve_easy_mc": f"""task: tuneserve_easy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {SUITES_DIR / "easy-choices" / "items.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""",
    "tuneserve_capitals": f"""task: tuneserve_capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {SUITES_DIR / "world-capitals" / "items.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "What is the capital of {{{{country}}}}? Answer with the city's name only."
doc_to_target: "{{{{capital}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 16
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
    ignore_case: true
    ignore_punctuation: true
""",
}


def test_lm_eval_harness_evaluates_a_tuneserve_model(
    client: openai.OpenAI, stack: RunningStack, tmp_path: Path
) -> None:
    # Log-likelihood multiple choice through /v1/completions (token ids in, echo + logprobs out).
    mc = _lm_eval(stack, tmp_path / "mc", "local-completions", "completions", "tuneserve_easy_mc")
    assert mc["acc,none"] >= 0.9, mc["acc,none"]
    # Generation through /v1/chat/completions: the same greedy answers as asking the API directly.
    gen = _lm_eval(
        stack,
        tmp_path / "gen",
        "local-chat-completions",
        "chat/completions",
        "tuneserve_capitals",
        "--apply_chat_template",
        "--limit",
        "8",
    )
    assert len(gen["samples"]) == 8
    for sample in gen["samples"]:
        [messages] = [json.loads(arg) for arg in sample["arguments"]["gen_args_0"]["arg_0"]]
        direct = client.chat.completions.create(
            model=BASE, messages=messages, max_tokens=16, temperature=0, stop=["\n"]
        )
        assert sample["resps"][0][0] == direct.choices[0].message.content
    assert sum(sample["doc"]["capital"] in sample["resps"][0][0] for sample in gen["samples"]) >= 6
