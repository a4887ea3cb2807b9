"""Scale-out on one machine: a second Ray node (its own raylet on 127.0.0.2) joins the stack's head, and
a two-worker fine-tuning job places one worker on each node."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.platform.net import free_port
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import DATA, make_stack, wait_job


def test_two_worker_job_runs_on_both_nodes(tmp_path: Path) -> None:
    s = make_stack(tmp_path / "cluster", TUNESERVE_RAY_NUM_CPUS="2")
    s.up()
    node = None
    try:
        gcs = s.state["ray_address"]
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "RAY_worker_niceness": "0",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        # Its own IP (else Ray Train sees one node), its own temp dir and agent port (else they collide).
        node = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ray"),
                "start",
                f"--address={gcs}",
                "--block",
                "--node-ip-address=127.0.0.2",
                "--num-cpus=2",
                f"--temp-dir={tempfile.mkdtemp(prefix='ts-node-')}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while "2 node(s)" not in s.get("/health").json()["components"]["ray"]["detail"]:
            assert node.poll() is None and time.monotonic() < deadline, "the second node did not join"
            time.sleep(1)

        client = s.client()
        train = client.files.create(file=(DATA / "codeword_train.jsonl").open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=DEFAULT_BASE_MODEL,
            training_file=train.id,
            hyperparameters={"n_epochs": 1, "batch_size": 8},
            extra_body={"resources": {"num_workers": 2, "cpus_per_worker": 1}, "deepspeed": {"stage": 2}},
        )
        job = wait_job(client, job.id, {"succeeded", "failed", "cancelled"})
        assert job.status == "succeeded", job.error
        started = next(
            e.message
            for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
            if e.message.startswith("Training started")
        )
        hosts = started.split(" worker(s) on ")[1].split(", ZeRO")[0].split(", ")
        assert len(set(hosts)) == 2 and "127.0.0.2" in hosts, started  # one worker on each node
    finally:
        if node is not None:
            node.terminate()
            node.wait(60)
        s.down()
