"""What kind of failure ended a training run, from the error Ray Train raised (light: no Ray import)."""

from __future__ import annotations

from collections.abc import Iterator

# Ray's errors for a lost worker, actor or node: the run was interrupted, the training did not fail.
_INFRASTRUCTURE_ERRORS = {
    "ActorDiedError",
    "NodeDiedError",
    "WorkerCrashedError",
    "RaySystemError",
    "ActorUnavailableError",
    "ObjectLostError",
    "OwnerDiedError",
    "LocalRayletDiedError",
    # Ray Train's health checks of its workers: a worker process that died or hangs.
    "WorkerHealthCheckFailedError",
    "WorkerHealthCheckTimeoutError",
}


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps, says a worker, actor or node went away."""
    return any(
        type(e).__name__ in _INFRASTRUCTURE_ERRORS or "node has crashed" in str(e) for e in errors_within(exc)
    )


def is_capacity_timeout(exc: BaseException) -> bool:
    """Whether the run failed because its workers' resources stayed taken for the whole capacity wait."""
    return any(type(e).__name__ == "WorkerGroupStartupTimeoutError" for e in errors_within(exc))


def errors_within(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error it wraps. Ray Train keeps the workers' errors in `worker_failures`, a health
    check's in `health_check_failure` and its controller's in `controller_failure`, not in the exception
    chain, so those are looked into too."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [
            current.__cause__,
            current.__context__,
            getattr(current, "health_check_failure", None),
            getattr(current, "controller_failure", None),
            *(getattr(current, "worker_failures", None) or {}).values(),
        ]
        pending += [e for e in wrapped if isinstance(e, BaseException)]
