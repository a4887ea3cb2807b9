"""A run whose workers cannot be placed waits a bounded time, saying so in its events, then fails with a
reason the driver recognises (Ray Train's FailureConfig on the shared stack's real Ray cluster)."""

from __future__ import annotations

import json
import time

import pytest

from service.protocol.fine_tuning import JobContext, TrackingSettings
from tests.integration.helpers import RunningStack, ray_auth_of, spec_for
from trainers.failures import is_capacity_timeout
from trainers.ray_run import fit
from trainers.reporter import NullReporter


def test_a_run_without_room_waits_its_bound_in_events_then_fails_as_a_capacity_timeout(
    stack: RunningStack,
) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    address = json.loads((stack.data_dir / "run" / "stack.json").read_text())["ray_address"]
    with ray_auth_of(stack):  # the stack's Ray wants its token, for as long as this process speaks to it
        ray.init(address=address, log_to_driver=False)
        try:
            # Everything the cluster has free is taken, as after losing a node: the run's 2 CPUs never come.
            free = ray.available_resources().get("CPU", 0)
            held = placement_group([{"CPU": free}]) if free else None
            if held is not None:
                ray.get(held.ready(), timeout=30)
            reporter = ray.remote(NullReporter).options(num_cpus=0).remote()
            context = JobContext(
                spec=spec_for("unused", "0", seed=0, name="capacity"),
                database_url="sqlite://",
                s3_endpoint_url=None,
                s3_access_key_id=None,
                s3_secret_access_key=None,
                s3_region="us-east-1",
                s3_bucket="unused",
                tracking=TrackingSettings(
                    wandb_mode="offline", wandb_dir="/tmp", mlflow_tracking_uri="sqlite://"
                ),
                capacity_wait_s=6,
            )
            started = time.monotonic()
            with pytest.raises(Exception) as failed:
                fit(context, reporter)
            waited = time.monotonic() - started
            assert is_capacity_timeout(failed.value), failed.value
            assert waited >= 6  # the whole bound (not a timing assertion on speed: a lower bound by design)
            messages = [m for kind, m in ray.get(reporter.recorded.remote()) if kind == "warn"]
            assert len(messages) == 2, messages  # three tries of 2 s: two waits told, the third fails the run
            assert messages[0].startswith("Waiting for capacity: 1 worker(s) x 2 CPU(s)"), messages
            if held is not None:
                remove_placement_group(held)
        finally:
            ray.shutdown()
