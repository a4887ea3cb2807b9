"""A crash of the whole stack (its supervisor killed with SIGKILL) loses no work: the keys and objects, a
vector store's index, an upload cut off mid-way (no file, no object left), a file's ingestion cut off mid-way
(ingested again on start), a fine-tuning job cut
off mid-run (the scheduler finds its Ray job gone and runs it again from its last checkpoint) and an
evaluation run cut off mid-way (it goes on with the items it had not graded, keeping those it had). One stack does it all, beside the session's: starting stacks is the slow
part of this tier."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

import httpx
import openai
from sqlalchemy import select

from service.platform.db import Database, EvalOutputItemRow, FileRow, VectorStoreFileRow
from tests.integration.helpers import (
    RunningStack,
    eval_of_samples,
    make_stack,
    process_cmdlines,
    stack_pids,
    store_of,
    three_checkpoint_job,
    wait_eval_run,
    wait_first_checkpoint,
    wait_job,
    wait_until,
)

# One item a task, one task at a time: ~15 are graded before the crash (~5 a second), so the run is cut off
# mid-way. More only slow the job's rerun beside them (400 items: the test took ~85 s longer).
ITEMS = 150
PASSING = (ITEMS + 2) // 3


def test_a_crash_of_the_whole_stack_loses_no_work(stack: RunningStack, tmp_path: Path) -> None:
    s = make_stack(tmp_path / "crash", TUNESERVE_EVAL_BATCH_SIZE="1", TUNESERVE_EVAL_CONCURRENCY="1")
    s.up()
    try:
        # Side by side with the session's stack: its own port, and its own admin key.
        assert s.port != stack.port and s.get("/v1/models", key=stack.admin_key).status_code == 401
        client = s.client()
        key = json.loads(s.cli("keys", "create", "--tenant", "survivor").stdout)["key"]
        store_id, found = _vector_store(client)
        # Plain data parallel (ZeRO 0, no partitioning); checkpoints at steps 4, 8 and 12.
        job = three_checkpoint_job(client, seed=3, extra_body={"deepspeed": {"stage": 0}})
        wait_first_checkpoint(client, job.id)
        eval_id, run_id = eval_of_samples(client, ["yes" if i % 3 == 0 else "no" for i in range(ITEMS)])
        wait_until(lambda: _graded(client, eval_id, run_id), 120, "the eval run's first items")
        graded = _graded(client, eval_id, run_id)
        # ~200 KB of the language reference: still being ingested when the stack dies.
        cut_off = client.vector_stores.create(name="cut-off")
        text = "\n\n".join(topics[name] for name in sorted(topics)[:40]).encode()
        big = client.files.create(file=("reference.txt", text), purpose="assistants").id
        client.vector_stores.files.create(vector_store_id=cut_off.id, file_id=big)
        objects = sorted(p.name for p in (s.data_dir / "objects").iterdir())
        uploading = _upload_in_flight(s)  # its body still streaming in when the stack dies

        os.kill(s.state["pid"], signal.SIGKILL)
        # Its children die with it (parent-death signal), so no orphans hold ports or memory.
        wait_until(lambda: not stack_pids(s.data_dir), 60, "the killed stack's processes to exit")
        assert graded.keys() <= _stored(s) < set(range(ITEMS))  # the run was cut off mid-way
        assert _ingestion(s, cut_off.id) == "in_progress"  # and so was the ingestion
        uploading.join(30)
        s.up()
        assert stack.get("/v1/models").status_code == 200  # the other stack never noticed
        # The cut-off upload left no file and no object; every object under files/ is a file's.
        assert "in-flight.txt" not in [f.filename for f in client.files.list()]
        with _database(s) as session:
            keys = set(session.scalars(select(FileRow.key)))
        assert {o.key for o in store_of(s).list("files/")} <= keys
        assert s.get("/v1/models", key=key).status_code == 200  # the tenant key survived
        assert sorted(p.name for p in (s.data_dir / "objects").iterdir()) == objects
        assert _search(client, store_id) == found
        wait_until(
            lambda: not client.vector_stores.retrieve(cut_off.id).file_counts.in_progress, 300, "ingestion"
        )
        assert client.vector_stores.files.retrieve(big, vector_store_id=cut_off.id).status == "completed"
        hits = client.vector_stores.search(cut_off.id, query="the Python debugger, pdb").data
        assert hits and hits[0].filename == "reference.txt"

        run = wait_eval_run(client, eval_id, run_id)
        counts = run.result_counts
        assert run.status == "completed" and (counts.total, counts.passed) == (ITEMS, PASSING), run
        after = _graded(client, eval_id, run_id)
        assert sorted(after) == list(range(ITEMS))  # each item graded once
        assert all(after[i] == item_id for i, item_id in graded.items())  # those graded before were kept

        job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200).data]
        assert any("Run lost" in m or "Run interrupted" in m for m in messages)  # and it was rerun
        assert any(m.startswith("Resumed from the checkpoint of step ") for m in messages)  # not from step 1
        assert any("ZeRO stage 0" in m for m in messages)
        assert job.fine_tuned_model in [m.id for m in client.models.list()]

        # A component that stops answering makes the stack degraded: `status` exits 1.
        cmdlines = process_cmdlines()
        [s3] = [pid for pid in stack_pids(s.data_dir) if "rclone" in cmdlines.get(pid, "")]
        os.kill(s3, signal.SIGSTOP)
        try:
            degraded = s.cli("status", check=False, timeout=120)
        finally:
            os.kill(s3, signal.SIGCONT)
        assert degraded.returncode == 1 and '"running": true' in degraded.stdout, degraded.stdout
    finally:
        s.down()
    wait_until(lambda: not stack_pids(s.data_dir), 30, "`tuneserve down` to stop every process")
    stopped = s.cli("status", check=False)
    assert stopped.returncode == 3 and "not running" in stopped.stdout


def _upload_in_flight(s: RunningStack) -> threading.Thread:
    """A thread uploading a file slowly (its first chunks are in when this returns); it ends with an error
    when the stack dies."""
    started = threading.Event()

    def body() -> Iterator[bytes]:
        boundary = b"--in-flight"
        yield boundary + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="in-flight.txt"\r\n\r\n'
        for _ in range(600):
            yield b"words " * 2000
            started.set()
            time.sleep(0.1)
        yield b"\r\n" + boundary + b"--\r\n"

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                s.base_url + "/v1/files",
                content=body(),
                headers={
                    "Authorization": f"Bearer {s.admin_key}",
                    "Content-Type": "multipart/form-data; boundary=in-flight",
                },
                timeout=120,
            )

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    assert started.wait(30)
    time.sleep(0.5)
    return thread


def _vector_store(client: openai.OpenAI) -> tuple[str, list]:
    """A store of three chapters of the language reference, and what a question finds in it."""
    store = client.vector_stores.create(name="durable")
    for name in ("pass", "break", "assert"):
        upload = client.files.create(file=(f"{name}.txt", topics[name].encode()), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=upload.id)
    wait_until(
        lambda: not client.vector_stores.retrieve(store.id).file_counts.in_progress, 300, "the ingestion"
    )
    found = _search(client, store.id)
    assert found[0][0] == "assert.txt"
    return store.id, found


def _search(client: openai.OpenAI, store_id: str) -> list[tuple[str, float]]:
    results = client.vector_stores.search(store_id, query="debugging assertions").data
    return [(r.filename, r.score) for r in results]


def _graded(client: openai.OpenAI, eval_id: str, run_id: str) -> dict[int, str]:
    """Output item id by item index, every page."""
    graded: dict[int, str] = {}
    after = None
    while True:
        page = client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=100, after=after)
        graded |= {i.datasource_item_id: i.id for i in page.data}
        if not page.has_more:
            return graded
        after = page.data[-1].id


def _stored(s: RunningStack) -> set[int]:
    """The indexes of the items the stack's database has an output item for (read with the stack down)."""
    with _database(s) as session:
        return set(session.scalars(select(EvalOutputItemRow.index)))


def _ingestion(s: RunningStack, store_id: str) -> str:
    """The status of the one file of a vector store, in the database (read with the stack down)."""
    with _database(s) as session:
        return session.scalars(
            select(VectorStoreFileRow.status).where(VectorStoreFileRow.store_id == store_id)
        ).one()


@contextlib.contextmanager
def _database(s: RunningStack) -> Iterator:
    db = Database(f"sqlite:///{s.data_dir / 'tuneserve.db'}")
    try:
        with db.session() as session:
            yield session
    finally:
        db.close()
