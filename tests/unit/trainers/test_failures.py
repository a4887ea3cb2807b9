"""Which failures of a run are the cluster's (requeue the job) and which are the training's (fail it)."""

from __future__ import annotations

from trainers.failures import is_capacity_timeout, is_infrastructure_failure
from trainers.ray_run import start_tries_within


class ActorDiedError(Exception):
    pass


class WorkerHealthCheckFailedError(Exception):
    def __init__(self, message: str, failure: Exception) -> None:
        super().__init__(message)
        self.health_check_failure = failure


class WorkerGroupError(Exception):
    """Ray Train's shape: the workers' errors in a dict, not in the exception chain."""

    def __init__(self, message: str, worker_failures: dict[int, Exception]) -> None:
        super().__init__(message)
        self.worker_failures = worker_failures


def test_a_killed_worker_inside_ray_trains_worker_group_error_is_the_clusters() -> None:
    killed = WorkerGroupError(
        "Training failed due to worker errors",
        {0: WorkerHealthCheckFailedError("poll failed", ActorDiedError())},
    )
    assert is_infrastructure_failure(killed)
    assert is_infrastructure_failure(RuntimeError("driver")) is False
    crashed = WorkerGroupError("Training failed due to worker errors", {0: ValueError("loss is NaN")})
    assert not is_infrastructure_failure(crashed)  # the training's own failure


def test_the_chain_is_followed() -> None:
    try:
        try:
            raise ActorDiedError("gone")
        except ActorDiedError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_infrastructure_failure(outer)


class WorkerGroupStartupTimeoutError(Exception):
    pass


class ControllerError(Exception):
    """Ray Train's shape: the controller's error in `controller_failure`."""

    def __init__(self, failure: Exception) -> None:
        super().__init__("controller failed")
        self.controller_failure = failure


def test_a_start_that_timed_out_is_a_capacity_timeout_not_a_lost_worker() -> None:
    timed_out = ControllerError(WorkerGroupStartupTimeoutError("no room for 1 worker"))
    assert is_capacity_timeout(timed_out)
    assert not is_infrastructure_failure(timed_out)  # not requeued: the job fails with the reason
    assert not is_capacity_timeout(WorkerGroupError("x", {0: ActorDiedError()}))


def test_the_capacity_wait_is_split_into_tries_of_at_most_a_minute() -> None:
    assert start_tries_within(300) == (60, 5)
    assert start_tries_within(90) == (30, 3)
    assert start_tries_within(150) == (50, 3)
    assert start_tries_within(6) == (2, 3)
