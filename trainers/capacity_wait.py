"""The job's events while Ray Train waits for its workers' resources (imported by `trainers.ray_run.fit`
only: it builds on Ray Train's controller callbacks, which import Ray)."""

from __future__ import annotations

from ray.train.v2._internal.execution.callback import ControllerCallback

from service.protocol.fine_tuning import ResourceOptions


def capacity_wait_message(resources: ResourceOptions, tries: int, try_s: float, bound_s: float) -> str:
    cpus = resources.num_workers * resources.cpus_per_worker
    gpus = f" and {resources.num_workers} GPU(s)" if resources.use_gpu else ""
    return (
        f"Waiting for capacity: {resources.num_workers} worker(s) x {resources.cpus_per_worker} CPU(s) "
        f"({cpus} CPUs{gpus}) not free after {tries * try_s:g} s; the job fails after {bound_s:g} s "
        "(TUNESERVE_TRAINING_CAPACITY_WAIT_S)"
    )


class CapacityWaitEvents(ControllerCallback):
    """Runs in Ray Train's controller: each try at starting the workers that timed out becomes a warning in
    the job's events."""

    def __init__(self, reporter, resources: ResourceOptions, try_s: float, bound_s: float) -> None:
        self.reporter = reporter  # a Ray actor handle of a trainers.reporter.Reporter
        self.resources = resources
        self.try_s = try_s
        self.bound_s = bound_s
        self.tries = 0

    def after_controller_state_update(self, previous_state, current_state) -> None:
        from trainers.failures import is_capacity_timeout

        if type(current_state).__name__ != "ReschedulingState":  # the last try's failure ends the run
            return
        error = getattr(current_state, "training_failed_error", None)
        if error is None or not is_capacity_timeout(error):
            return
        self.tries += 1
        message = capacity_wait_message(self.resources, self.tries, self.try_s, self.bound_s)
        self.reporter.message.remote(message, "warn")
