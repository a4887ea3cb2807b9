"""The same SQLAlchemy code on a real PostgreSQL server (conftest's `postgres_url`): the schema and keys
directly, then what the PostgreSQL stack's own settings make testable: one running job per tenant (ZeRO 3,
continued training, the attempt limit). The feature tests of jobs, evals and vector stores run on it
too, through `feature_stack`."""

from __future__ import annotations

import time

import pytest

from service.platform.auth import KeyStore
from service.platform.db import Database
from service.platform.net import free_port
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import (
    DATA,
    RunningStack,
    kill_training_workers,
    second_node,
    wait_job,
)


def test_migrate_and_keys_on_postgres(postgres_url: str) -> None:
    db = Database(postgres_url)
    assert db.migrate() == db.migrate()  # idempotent
    keys = KeyStore(db, admin_key="ts-admin")
    row, key = keys.create("acme", "pg")
    principal = keys.authenticate(key)
    assert principal is not None and principal.tenant == "acme" and not principal.is_admin
    assert keys.authenticate("ts-admin").is_admin
    keys.revoke(row.id)
    assert keys.authenticate(key) is None
    db.close()


def test_wrong_postgres_url_is_a_clear_error() -> None:
    from service.platform.db import DatabaseError

    db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")
    with pytest.raises(DatabaseError, match="unusable"):
        db.migrate()


def test_fine_tuning_jobs_on_postgres_one_at_a_time_per_tenant(pg_stack: RunningStack) -> None:
    """Jobs of one tenant with a limit of one running job: the second waits in the queue until the first
    has finished, a third is cancelled while it waits. The first trains with ZeRO stage 3 (the LoRA weights
    partitioned and gathered) with one worker on each node of the cluster; a fourth continues from its
    model. The second loses its workers, and with TUNESERVE_TRAINING_MAX_ATTEMPTS=1 it is not run again:
    it fails with `job_lost`, saying so. Events and checkpoints page through the database."""
    with second_node(pg_stack):  # the cluster-shaped stack: PostgreSQL and two Ray nodes
        client = pg_stack.client()
        lines = (DATA / "codeword_train.jsonl").read_bytes().splitlines()[:8]
        train = client.files.create(file=("train.jsonl", b"\n".join(lines)), purpose="fine-tune")
        hyper = {"n_epochs": 2, "batch_size": 4}  # 4 steps, the same batches for every job (one seed)
        job = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            hyperparameters=hyper,
            seed=5,
            extra_body={"deepspeed": {"stage": 3}},
        )
        second = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, hyperparameters={**hyper, "n_epochs": 8}, seed=5
        )
        third = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, metadata={"queue": "third"}
        )
        # OpenAI's metadata filter in PostgreSQL's JSON dialect
        assert [j.id for j in client.fine_tuning.jobs.list(metadata={"queue": "third"})] == [third.id]
        unlabelled = {j.id for j in client.fine_tuning.jobs.list(extra_query={"metadata": "null"})}
        assert {job.id, second.id} <= unlabelled and third.id not in unlabelled
        wait_job(client, job.id, {"running", "succeeded"})
        assert client.fine_tuning.jobs.retrieve(second.id).status == "queued"
        assert client.fine_tuning.jobs.cancel(third.id).status == "cancelled"  # never submitted
        job = wait_job(client, job.id, {"succeeded", "failed"})
        assert job.status == "succeeded", job.error
        [started] = [
            e.message
            for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
            if e.message.startswith("Training started")
        ]
        hosts = started.split(" worker(s) on ")[1].split(", ZeRO")[0].split(", ")
        assert "ZeRO stage 3" in started and len(set(hosts)) == 2 and "127.0.0.2" in hosts, started
        third = client.fine_tuning.jobs.retrieve(third.id)
        events = client.fine_tuning.jobs.list_events(third.id, limit=100).data
        assert third.status == "cancelled" and not any(e.message.startswith("Submitted") for e in events)

        deadline = time.monotonic() + 300
        while not any(
            e.type == "metrics" for e in client.fine_tuning.jobs.list_events(second.id, limit=5).data
        ):
            assert time.monotonic() < deadline, client.fine_tuning.jobs.retrieve(second.id).status
            time.sleep(0.5)
        kill_training_workers()
        second = wait_job(client, second.id, {"failed"})
        assert second.error.code == "job_lost" and "1 time(s)" in second.error.message, second.error
        events = client.fine_tuning.jobs.list_events(second.id, limit=100).data
        assert not any("requeued" in e.message for e in events)
        queued_until = [e.created_at for e in events if e.message.startswith("Submitted to Ray")]
        assert queued_until == [min(queued_until)] and queued_until[0] >= job.finished_at  # after the first

        # Training continues from the first job's model: it starts where that one ended (a lower first loss), and
        # the new model's parent is the first one.
        child = client.fine_tuning.jobs.create(
            model=job.fine_tuned_model, training_file=train.id, hyperparameters=hyper, seed=5
        )
        child = wait_job(client, child.id, {"succeeded", "failed"})
        assert child.status == "succeeded", child.error

        def first_loss(job_id: str) -> float:
            steps = [
                e for e in client.fine_tuning.jobs.list_events(job_id, limit=100).data if e.type == "metrics"
            ]
            return min(steps, key=lambda e: e.data["step"]).data["train_loss"]

        assert first_loss(child.id) < first_loss(job.id)
        parents = {m.id: m.model_extra["parent"] for m in client.models.list()}
        assert (
            parents[child.fine_tuned_model] == job.fine_tuned_model
            and parents[job.fine_tuned_model] == DEFAULT_BASE_MODEL
        )
        events = client.fine_tuning.jobs.list_events(job.id, limit=3)
        older = client.fine_tuning.jobs.list_events(job.id, limit=100, after=events.data[-1].id)
        every = [e.id for e in events.data] + [e.id for e in older.data]
        assert len(every) == len(set(every)) > 5 and any(e.type == "metrics" for e in older.data)
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]
        assert job.fine_tuned_model in {m.id for m in client.models.list()}
