"""A fine-tuning job survives a restart of the whole stack: the scheduler finds its Ray job gone and runs
it again, from its last checkpoint, and it succeeds."""

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
        lines = (DATA / "codeword_train.jsonl").read_bytes().splitlines()[:16]
        train = client.files.create(file=("train16.jsonl", b"\n".join(lines)), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            seed=3,
            hyperparameters={"n_epochs": 3, "batch_size": 4},  # checkpoints at steps 4, 8 and 12
            extra_body={"deepspeed": {"stage": 0}},  # plain data parallel, no ZeRO partitioning
        )
        deadline = time.monotonic() + 300
        while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        s.down()  # the Ray cluster and the run go away mid-training
        s.up()
        job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
        assert job.status == "succeeded", job.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=200).data]
        assert any("Run lost" in m or "Run interrupted" in m for m in messages)  # and it was rerun
        assert any(m.startswith("Resumed from the checkpoint of step ") for m in messages)  # not from step 1
        assert any("ZeRO stage 0" in m for m in messages)
        assert job.fine_tuned_model in [m.id for m in client.models.list()]
    finally:
        s.down()
