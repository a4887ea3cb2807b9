"""Which failures of a run are the cluster's (requeue the job) and which are the training's (fail it)."""

from __future__ import annotations

from trainers.ray_run import is_infrastructure_failure


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
