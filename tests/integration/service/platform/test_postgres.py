"""The same SQLAlchemy code on a real PostgreSQL server (started here from the machine's binaries): the
schema and keys directly, then fine-tuning, vector stores and evals through a stack whose database it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.platform.auth import KeyStore
from service.platform.db import Database
from service.platform.net import free_port
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import DATA, RunningStack, make_stack, wait_job

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*cmd: str) -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package provides a `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ts-pg-"))
    data = root / "data"
    shutil.chown(root, "postgres") if os.geteuid() == 0 else None
    port = free_port()
    subprocess.run(
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -h 127.0.0.1",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = _as_postgres(str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port))
        while subprocess.run(ready, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not accept connections in 30 s"
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


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


# The features on PostgreSQL: a stack (without serving) whose database is the server above -------------


@pytest.fixture(scope="module")
def pg_stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = make_stack(
        tmp_path_factory.mktemp("pg-stack"),
        TUNESERVE_DATABASE_URL=postgres_url,
        TUNESERVE_MAX_RUNNING_JOBS_PER_TENANT="1",
    )
    running.up()
    try:
        yield running
    finally:
        running.down()


def test_fine_tuning_jobs_on_postgres_one_at_a_time_per_tenant(pg_stack: RunningStack) -> None:
    """Two jobs of one tenant with a limit of one running job: the second waits in the queue until the
    first has finished. The first trains with ZeRO stage 3 (the LoRA weights partitioned and gathered); a
    third continues from its model. Events and checkpoints page through the database."""
    client = pg_stack.client()
    lines = (DATA / "codeword_train.jsonl").read_bytes().splitlines()[:8]
    train = client.files.create(file=("train.jsonl", b"\n".join(lines)), purpose="fine-tune")
    hyper = {"n_epochs": 2, "batch_size": 4}  # 4 steps, the same batches for every job (one seed)
    job, second = (
        client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL, training_file=train.id, hyperparameters=hyper, seed=5, extra_body=extra
        )
        for extra in ({"deepspeed": {"stage": 3}}, {})
    )
    wait_job(client, job.id, {"running", "succeeded"})
    assert client.fine_tuning.jobs.retrieve(second.id).status == "queued"
    job = wait_job(client, job.id, {"succeeded", "failed"})
    assert job.status == "succeeded", job.error
    assert wait_job(client, second.id, {"succeeded", "failed"}).status == "succeeded"
    started = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any("ZeRO stage 3" in m for m in started)
    queued_until = [
        e.created_at
        for e in client.fine_tuning.jobs.list_events(second.id, limit=100).data
        if e.message.startswith("Submitted to Ray")
    ]
    assert queued_until and min(queued_until) >= job.finished_at  # submitted once the first had ended

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


def test_vector_stores_on_postgres(pg_stack: RunningStack) -> None:
    from pydoc_data.topics import topics

    client = pg_stack.client()
    files = [
        client.files.create(file=(f"{n}.txt", topics[n].encode()), purpose="assistants").id
        for n in ("pass", "del")
    ]
    store = client.vector_stores.create(name="pg")
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=files)
    deadline = time.monotonic() + 300
    while (
        client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).status == "in_progress"
    ):
        assert time.monotonic() < deadline
        time.sleep(1)
    [best, *_] = client.vector_stores.search(store.id, query="a null operation that does nothing").data
    assert best.filename == "pass.txt"
    page = client.vector_stores.files.list(store.id, limit=1)
    rest = client.vector_stores.files.list(store.id, limit=10, after=page.data[0].id)
    assert {f.id for f in page.data + rest.data} == set(files) and page.has_more and not rest.has_more


def test_an_eval_run_on_postgres(pg_stack: RunningStack) -> None:
    client = pg_stack.client()
    ev = client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {"type": "object"},
            "include_sample_schema": True,
        },
        testing_criteria=[
            {
                "type": "string_check",
                "name": "yes",
                "input": "{{sample.output_text}}",
                "reference": "yes",
                "operation": "eq",
            }
        ],
    )
    content = [{"item": {"n": i}, "sample": {"output_text": "yes" if i % 2 else "no"}} for i in range(10)]
    run = client.evals.runs.create(
        ev.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}}
    )
    deadline = time.monotonic() + 300
    while (run := client.evals.runs.retrieve(run.id, eval_id=ev.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert run.status == "completed" and run.result_counts.passed == 5 and run.result_counts.failed == 5
    first = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=4)
    rest = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=10, after=first.data[-1].id)
    assert [i.datasource_item_id for i in first.data + rest.data] == list(range(10))
