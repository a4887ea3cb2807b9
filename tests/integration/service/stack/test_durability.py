"""A fine-tuning job survives a restart of the whole stack: the scheduler finds its Ray job gone and runs
it again, and it succeeds."""

from __future__ import annotations

import time
from pathlib import Path

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import DATA, make_stack, wait_job


def test_job_survives_a_stack_restart(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "durable")
    s.up()
    try:
        client = s.client()
        train = client.files.create(file=(DATA / "codeword_train.jsonl").open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            seed=3,
            hyperparameters={"n_epochs": 1, "batch_size": 1},
            extra_body={"deepspeed": {"stage": 0}},  # plain data parallel, no ZeRO partitioning
        )
        wait_job(client, job.id, {"running"})
        deadline = time.monotonic() + 120
        while not any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job.id, limit=5).data):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        s.down()  # the Ray cluster and the run go away mid-training
        s.up()
        job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200).data]
        assert any("Run lost" in m or "Run interrupted" in m for m in messages)  # and it was rerun
        assert any("ZeRO stage 0" in m for m in messages)
        assert job.fine_tuned_model in [m.id for m in client.models.list()]
    finally:
        s.down()
