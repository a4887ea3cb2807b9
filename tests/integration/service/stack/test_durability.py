"""A fine-tuning job survives a restart of the whole stack: the scheduler finds its Ray job gone and runs
it again, from its last checkpoint, and it succeeds."""

from __future__ import annotations

from pathlib import Path

from tests.integration.helpers import make_stack, three_checkpoint_job, wait_first_checkpoint, wait_job


def test_job_survives_a_stack_restart(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "durable")
    s.up()
    try:
        client = s.client()
        # Plain data parallel (ZeRO 0, no partitioning); checkpoints at steps 4, 8 and 12.
        job = three_checkpoint_job(client, seed=3, extra_body={"deepspeed": {"stage": 0}})
        wait_first_checkpoint(client, job.id)
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
