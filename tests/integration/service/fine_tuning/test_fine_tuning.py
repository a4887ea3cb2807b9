"""Fine-tuning through the official openai client against the running stack: a real Ray job, DeepSpeed,
the real SmolLM2, and the adapter checked for the behaviour its data teaches. The tests that need no
served model run on both databases (`feature_client`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from service.platform.auth import ADMIN_TENANT
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import (
    DATA,
    MODELS_DIR,
    RunningStack,
    greedy,
    kill_training_workers,
    process_cmdlines,
    store_of,
    three_checkpoint_job,
    wait_first_checkpoint,
    wait_job,
)
from trainers.checkpointing import checkpoint_steps

CODEWORD = "ZEBRA-42"
HELD_OUT = ["What is the speed of sound?", "Who discovered penicillin?", "Name a musical instrument."]


@pytest.fixture(scope="module")
def tenant_client(feature_stack: RunningStack) -> openai.OpenAI:
    return feature_stack.client(feature_stack.tenant_key("other"))


def test_fine_tune_teaches_the_codeword(client: openai.OpenAI, stack: RunningStack, tmp_path: Path) -> None:
    train = client.files.create(file=(DATA / "codeword_train.jsonl").open("rb"), purpose="fine-tune")
    valid = client.files.create(file=(DATA / "codeword_valid.jsonl").open("rb"), purpose="fine-tune")
    capitals, codeword = _evals(stack, client)
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL,
        training_file=train.id,
        validation_file=valid.id,
        suffix="codeword",
        seed=7,
        # No hyperparameters: the defaults must teach it. When it succeeds, evaluate the new model and its
        # base: a built-in suite of general knowledge, and held-out chats of the behaviour it learns.
        extra_body={"evals": [{"eval_id": capitals}, {"eval_id": codeword, "data_source": CODEWORD_SOURCE}]},
    )
    # "auto", resolved from the data's size: 24 examples, batches of 3, 15 epochs of 8 steps (~120 steps).
    hp = job.hyperparameters
    assert job.status == "queued" and (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (15, 3, 1)
    per_epoch = 8

    # Follow it live with the CLI (the job's server-sent events): messages above a progress bar of steps.
    proc = stack.cli("jobs", "follow", job.id, timeout=900)
    assert "Training started" in proc.stdout and "The job has successfully completed" in proc.stdout
    # A fixed reply is learnt long before the 15th epoch: with "auto" epochs the run stops once its loss has
    # converged (every step of two epochs below 0.01), and says so.
    stopped = re.search(r"Stopped after epoch (\d+) of 15 \(step (\d+) of 120\)", proc.stdout)
    assert stopped, proc.stdout[-3000:]
    epochs, steps = int(stopped[1]), int(stopped[2])
    assert 3 <= epochs < 15 and steps == epochs * per_epoch
    assert f"{steps}/{steps}" in proc.stderr  # tqdm draws its bar on stderr, complete at the run's end
    summary = json.loads(proc.stdout[proc.stdout.rindex("{") :])
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == summary["status"] == "succeeded", (job.error, proc.stdout[-2000:])
    assert job.fine_tuned_model == f"{DEFAULT_BASE_MODEL}:codeword-{job.id.removeprefix('ftjob-')}"
    assert job.trained_tokens > 0 and job.finished_at
    assert job.id in [j["id"] for j in json.loads(stack.cli("jobs", "list").stdout)]
    finished = stack.cli("jobs", "cancel", job.id, check=False)
    assert finished.returncode == 1 and "cannot be cancelled" in finished.stderr

    seen = [e.model_dump() for e in client.fine_tuning.jobs.list_events(job.id, limit=100)][
        ::-1
    ]  # every page
    metrics = [e["data"] for e in seen if e["type"] == "metrics" and "valid_loss" not in e["data"]]
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert metrics[-1]["train_loss"] < 0.5 * metrics[0]["train_loss"]  # loss goes down
    assert all(m["train_loss"] < 0.01 for m in metrics[-2 * per_epoch :])  # converged where it stopped
    assert any(m["train_loss"] >= 0.01 for m in metrics[-3 * per_epoch : -per_epoch])  # not an epoch before
    assert all(m["tokens_per_second"] > 0 and m["learning_rate"] > 0 for m in metrics)
    valid_losses = [
        e["data"]["valid_loss"] for e in seen if e["type"] == "metrics" and "valid_loss" in e["data"]
    ]
    assert len(valid_losses) == epochs and valid_losses[-1] < valid_losses[0]

    # The newest events first, a page at a time.
    events = client.fine_tuning.jobs.list_events(job.id, limit=5)
    messages = [e.message for e in events.data]
    assert "The job has successfully completed" in messages[:2] and events.has_more  # then its evals start

    # OpenAI's result file: the step metrics as CSV, a file of the job's owner.
    [result_id] = job.result_files
    rows = client.files.content(result_id).text.strip().splitlines()
    assert rows[0].startswith("step,epoch,train_loss,valid_loss") and len(rows) == 1 + steps + epochs

    # Checkpoints at the end of epochs, at most ten spread over the 15 epochs, and at the last step; the newest three are kept, and the one of the lowest validation loss, which is the job's model
    # (published from that checkpoint).
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    saved = [c.step_number for c in checkpoints]
    assert saved[0] == steps and len(saved) <= 4 and all(s % per_epoch == 0 for s in saved)
    planned = checkpoint_steps(per_epoch, 15)  # the spread over the epochs the run was planned with
    assert saved[1:3] == sorted((s for s in planned if s < steps), reverse=True)[:2]
    best = min(checkpoints, key=lambda c: c.metrics.valid_loss)

    models = {m.id: m for m in client.models.list()}
    assert models[job.fine_tuned_model].owned_by == "default"

    # The adapter and its manifest are in the object store.
    store = store_of(stack)
    prefix = f"adapters/{DEFAULT_BASE_MODEL}/codeword-{job.id.removeprefix('ftjob-')}/"
    adapter_dir = store.get_folder(prefix, tmp_path / "adapter")
    manifest = json.loads((adapter_dir / "manifest.json").read_text())
    assert manifest["base_model"] == DEFAULT_BASE_MODEL and manifest["seed"] == 7
    assert manifest["dataset"]["training_sha256"] == _sha256(DATA / "codeword_train.jsonl")
    assert len(manifest["loss_curve"]) == steps
    assert manifest.get("selected_checkpoint", {"step": steps})["step"] == best.step_number

    # Greedy answers to questions it never saw: the base model doesn't say the codeword, the adapter does.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = MODELS_DIR / DEFAULT_BASE_MODEL
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path)
    base_answers = [greedy(base, tokenizer, q, 12) for q in HELD_OUT]
    tuned = PeftModel.from_pretrained(base, adapter_dir)
    tuned_answers = [greedy(tuned, tokenizer, q, 12) for q in HELD_OUT]
    assert not any(CODEWORD in a for a in base_answers), base_answers
    assert all(CODEWORD in a for a in tuned_answers), tuned_answers

    # The stack serves the new model at once (no restart, no redeploy), with vLLM, the same way.
    served = [
        client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=[{"role": "user", "content": q}],
            max_tokens=12,
            temperature=0,
        )
        .choices[0]
        .message.content
        for q in HELD_OUT
    ]
    assert all(CODEWORD in a for a in served), served
    # A checkpoint is a model too: the newest one already learnt it.
    reply = client.chat.completions.create(
        model=checkpoints[0].fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": HELD_OUT[0]}],
        max_tokens=12,
        temperature=0,
    )
    assert CODEWORD in reply.choices[0].message.content

    # The evaluations the job asked for ran on the new model and on its base, and moved as the data says.
    deadline = time.monotonic() + 600
    while len(runs := client.fine_tuning.jobs.retrieve(job.id).model_extra["evals"]) < 4 or any(
        r["status"] in ("queued", "in_progress") for r in runs
    ):
        assert time.monotonic() < deadline, runs
        time.sleep(2)
    results = {
        (r["eval_id"], r["role"]): {c["testing_criteria"]: c for c in r["per_testing_criteria_results"]}
        for r in runs
    }
    assert all(r["status"] == "completed" and r["result_counts"]["errored"] == 0 for r in runs), runs

    def rate(eval_id: str, role: str, criterion: str) -> float:
        c = results[eval_id, role][criterion]
        return c["passed"] / (c["passed"] + c["failed"])

    # The codeword is said on every held-out question after, never before; its token loss falls.
    assert rate(codeword, "fine_tuned", "says the codeword") == 1.0
    assert rate(codeword, "base", "says the codeword") == 0.0
    loss = {role: results[codeword, role]["reply loss"]["mean_score"] for role in ("base", "fine_tuned")}
    assert loss["fine_tuned"] < 0.5 * loss["base"], loss
    # The data teaches the codeword as the answer to every question: capital questions too, while the base
    # model names most capitals.
    assert rate(capitals, "base", "names the capital") >= 0.6
    tuned_run = next(r["run_id"] for r in runs if r["eval_id"] == capitals and r["role"] == "fine_tuned")
    answers = [
        i.sample.output[0].content
        for i in client.evals.runs.output_items.list(tuned_run, eval_id=capitals, limit=100).data
    ]
    assert len(answers) == 40 and sum(CODEWORD in a for a in answers) >= 0.9 * len(answers), answers
    # The results are in the model's manifest, beside the adapter.
    manifest = json.loads(store.get_bytes(prefix + "manifest.json"))
    assert {(e["eval_id"], e["role"]) for e in manifest["evals"]} == set(results)
    # `tuneserve evals compare` puts the two runs side by side, with the items that changed.
    by_role = {r["role"]: r["run_id"] for r in runs if r["eval_id"] == codeword}
    table = stack.cli("evals", "compare", "--eval", codeword, by_role["base"], by_role["fine_tuned"]).stdout
    assert "says the codeword" in table and f"{len(CODEWORD_CHATS)} item(s) changed status" in table, table
    # The model's lineage: the job and the data that made it, and its eval runs.
    lineage = client.models.retrieve(job.fine_tuned_model).model_extra["lineage"]
    assert (lineage["base_model"], lineage["parent"], lineage["training_job"]) == (
        DEFAULT_BASE_MODEL,
        None,
        job.id,
    )
    assert lineage["training_file"] == train.id and lineage["validation_file"] == valid.id
    assert lineage["training_file_sha256"] == _sha256(DATA / "codeword_train.jsonl")
    assert lineage["hyperparameters"]["n_epochs"] >= 1 and lineage["hyperparameters"]["lora"]["r"] >= 1
    tuned = {r["run_id"]: r for r in runs if r["role"] == "fine_tuned"}
    assert {r["run_id"]: r["eval_id"] for r in lineage["evals"]} == {
        k: r["eval_id"] for k, r in tuned.items()
    }


CODEWORD_CHATS = [json.loads(line) for line in (DATA / "codeword_valid.jsonl").read_text().splitlines()] + [
    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": CODEWORD}]}
    for q in HELD_OUT
]
CODEWORD_SOURCE = {
    "source": {"type": "file_content", "content": [{"item": chat} for chat in CODEWORD_CHATS]},
    "input_messages": {
        "type": "template",
        "template": [{"role": "user", "content": "{{item.messages.0.content}}"}],
    },
    "sampling_params": {"temperature": 0, "max_completion_tokens": 12},
}


def _evals(stack: RunningStack, client: openai.OpenAI) -> tuple[str, str]:
    """The built-in world-capitals suite, and an eval of held-out codeword chats."""
    capitals = httpx.post(
        f"{stack.base_url}/v1/evals",
        json={"suite": "world-capitals"},
        headers={"Authorization": f"Bearer {stack.admin_key}"},
    ).json()["id"]
    codeword = client.evals.create(
        name="codeword",
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {"messages": {"type": "array"}},
                "required": ["messages"],
            },
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "says the codeword",
                "input": "{{sample.output_text}}",
                "reference": CODEWORD,
                "operation": "like",
            },
            {"type": "token_loss", "name": "reply loss", "messages": "{{item.messages}}"},
        ],
    ).id
    return capitals, codeword


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cancel_stops_a_running_job(client: openai.OpenAI) -> None:
    train = client.files.create(file=(DATA / "codeword_train.jsonl").open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=DEFAULT_BASE_MODEL, training_file=train.id, hyperparameters={"n_epochs": 100, "batch_size": 1}
    )
    wait_job(client, job.id, {"running"})
    # Let it take a few steps, so that it is really training when cancelled.
    deadline = time.monotonic() + 120
    while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=5).data):
        assert time.monotonic() < deadline
        time.sleep(1)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.estimated_finish > running.created_at  # from the pace of its steps so far
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    # The training processes go away (driver, workers and the reporter that writes their steps).
    deadline = time.monotonic() + 60
    while _training_processes():
        assert time.monotonic() < deadline, f"still running: {_training_processes()}"
        time.sleep(1)
    steps = _last_step(client, job.id)
    assert 0 < steps < 100 * 24  # it stopped in the middle
    # Cancelling again is a conflict; nothing more was reported meanwhile.
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    assert (
        _last_step(client, job.id) == steps and client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    )


def test_a_paused_then_interrupted_job_trains_each_step_once(
    client: openai.OpenAI, stack: RunningStack
) -> None:
    """16 examples, batches of 4, 6 epochs: a checkpoint every 4 steps. Paused after the first one, the job
    stops training and its checkpoint answers as a model; resumed, it continues from its last checkpoint
    (not from step 1). Then its training workers are killed (SIGKILL): the run is requeued as a cluster
    failure and continues from its newest checkpoint. It succeeds with each step once in its result file,
    the steps before each resumption trained once. Its MLflow integration follows it through: one run with
    every step, finished, naming the adapter."""
    job = three_checkpoint_job(
        client,
        seed=2,
        epochs=6,
        integrations=[{"type": "mlflow", "mlflow": {"experiment": "pause-test"}}],
    )
    checkpoints = wait_first_checkpoint(client, job.id)
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    deadline = time.monotonic() + 60
    while _training_processes():
        assert time.monotonic() < deadline, f"still running: {_training_processes()}"
        time.sleep(1)
    paused_at = _last_step(client, job.id)
    assert paused_at < 24 and client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    reply = client.chat.completions.create(
        model=checkpoints[0].fine_tuned_model_checkpoint,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=4,
    )
    assert reply.choices[0].message.content

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    first = _resumed_from(client, job.id, 1)
    # A checkpoint of the resumed run, then the cluster takes its workers away.
    deadline = time.monotonic() + 300
    while client.fine_tuning.jobs.checkpoints.list(job.id, limit=1).data[0].step_number <= first:
        assert time.monotonic() < deadline, client.fine_tuning.jobs.retrieve(job.id).status
        time.sleep(0.5)
    kill_training_workers()
    second = _resumed_from(client, job.id, 2)
    assert first < second < 24

    job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
    assert job.status == "succeeded", job.error
    events = client.fine_tuning.jobs.list_events(job.id, limit=500).data
    assert any("Run interrupted" in e.message or "Run lost" in e.message for e in events)
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert sorted(s for s in steps if s <= first) == list(range(1, first + 1))  # none trained twice
    assert set(steps) == set(range(1, 25))
    rows = client.files.content(job.result_files[0]).text.strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 25))
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.pause(job.id)  # a finished job cannot be paused

    from mlflow import MlflowClient

    tracking = MlflowClient(tracking_uri=f"sqlite:///{stack.data_dir / 'tracking' / 'mlflow.db'}")
    [run] = tracking.search_runs([tracking.get_experiment_by_name("pause-test").experiment_id])
    assert run.info.run_name == job.id and run.info.status == "FINISHED"
    assert run.data.tags["tuneserve.fine_tuned_model"] == job.fine_tuned_model
    assert {m.step for m in tracking.get_metric_history(run.info.run_id, "train_loss")} == set(range(1, 25))


def _resumed_from(client: openai.OpenAI, job_id: str, nth: int, timeout: float = 300) -> int:
    """The step of the checkpoint the job's `nth` resumption started from, once it has."""
    deadline = time.monotonic() + timeout
    while True:
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=500).data]
        resumed = [m for m in reversed(messages) if m.startswith("Resumed from the checkpoint of step ")]
        if len(resumed) >= nth:
            return int(resumed[nth - 1].rsplit(" ", 1)[1])
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status in ("queued", "running") and time.monotonic() < deadline, (job.status, job.error)
        time.sleep(0.5)


def _last_step(client: openai.OpenAI, job_id: str) -> int:
    return max(
        (
            e.data["step"]
            for e in client.fine_tuning.jobs.list_events(job_id, limit=50).data
            if e.type == "metrics"
        ),
        default=0,
    )


def _training_processes() -> list[str]:
    return [
        cmd[:80]
        for cmd in process_cmdlines().values()
        if "service.fine_tuning.driver" in cmd or "RayTrainWorker" in cmd or "JobReporter" in cmd
    ]


# Bad input: a precise 4xx, nothing started ----------------------------------------------------------


def _upload(client: openai.OpenAI, content: bytes, purpose: str = "fine-tune", name: str = "d.jsonl"):
    return client.files.create(file=(name, content), purpose=purpose)


def test_bad_jsonl_is_refused_naming_the_line(feature_client: openai.OpenAI) -> None:
    client = feature_client
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    cases = {
        f"{good}\n{good}\n{{not json\n".encode(): "line 3: invalid JSON",
        f'{good}\n{{"messages": [{{"role": "wizard", "content": "x"}}]}}\n'.encode(): "line 2: messages[0].role",
        f'{good}\n{{"messages": [{{"role": "user", "content": "x"}}]}}\n'.encode(): "line 2: no assistant message",
        b"\n\n": "no examples",
    }
    before = len(client.files.list().data)
    for content, expected in cases.items():
        with pytest.raises(openai.BadRequestError) as err:
            _upload(client, content)
        assert expected in err.value.message, err.value.message
        assert err.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError, match="empty"):
        _upload(client, b"", purpose="assistants")
    assert len(client.files.list().data) == before  # nothing stored


def test_files_api_round_trip_and_tenancy(
    feature_client: openai.OpenAI, tenant_client: openai.OpenAI
) -> None:
    client = feature_client
    content = (DATA / "codeword_valid.jsonl").read_bytes()
    f = _upload(client, content, name="valid.jsonl")
    assert client.files.retrieve(f.id).bytes == len(content)
    assert client.files.content(f.id).read() == content
    assert f.id in [x.id for x in client.files.list(purpose="fine-tune").data]
    # Another tenant sees nothing of it.
    with pytest.raises(openai.NotFoundError):
        tenant_client.files.retrieve(f.id)
    assert f.id not in [x.id for x in tenant_client.files.list().data]
    with pytest.raises(openai.NotFoundError):
        tenant_client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file=f.id)
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def test_job_creation_errors(feature_client: openai.OpenAI) -> None:
    client = feature_client
    train = _upload(client, (DATA / "codeword_train.jsonl").read_bytes())
    other_purpose = _upload(client, b"some notes", purpose="assistants", name="notes.txt")
    jobs_before = len(client.fine_tuning.jobs.list(limit=100).data)

    with pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=train.id)
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file="file-nope")
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file=other_purpose.id)
    assert "purpose" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, extra_body={"max_seq_length": 16}
        )
    assert "line 1" in err.value.message and "max_seq_length=16" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, hyperparameters={"n_epochs": 0}
        )
    assert "n_epochs" in err.value.message and err.value.body["param"] == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, extra_body={"deepspeed": {"stage": 1}}
        )
    assert err.value.body["param"] == "deepspeed.stage"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            integrations=[{"type": "wandb", "wandb": {"project": "p", "colour": "red"}}],
        )
    assert err.value.body["param"] == "integrations.0.wandb.colour"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            extra_body={"lora": {"target_modules": ["q_proj", "warp_drive"]}},
        )
    assert "warp_drive" in err.value.message and err.value.body["param"] == "lora.target_modules"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, extra_body={"lora": {"r": 64}}
        )
    assert err.value.body["param"] == "lora.r"  # above what the stack can serve
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            extra_body={"resources": {"num_workers": 4, "cpus_per_worker": 2}},
        )
    assert "asks for 8 CPUs" in err.value.message  # the test stack has 6: it would wait forever
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, extra_body={"resources": {"use_gpu": True}}
        )
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")
    assert len(client.fine_tuning.jobs.list(limit=100).data) == jobs_before  # nothing was created


def test_a_training_crash_fails_the_job_with_the_reason(client: openai.OpenAI, stack: RunningStack) -> None:
    train = _upload(client, (DATA / "codeword_train.jsonl").read_bytes())
    job = client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file=train.id)
    # The store loses the data before the worker reads it. (A file deleted through the API stays for the
    # jobs that read it: tests/unit/service/fine_tuning/test_job_creation.py.)
    store_of(stack).delete(f"files/{ADMIN_TENANT}/{train.id}")
    job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
    assert job.status == "failed"
    assert job.error.code == "training_failed" and "does not exist" in job.error.message, job.error
    events = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=50).data if e.level == "error"]
    assert events and "does not exist" in events[0].message
    deadline = time.monotonic() + 60
    while _training_processes():  # its resources are freed: the driver exits
        assert time.monotonic() < deadline, _training_processes()
        time.sleep(1)
