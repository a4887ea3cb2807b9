"""The scheduler: submits queued jobs to the launcher within each tenant's limit, and reconciles every
non-terminal job with its run (the durable part: after a restart of the service, or of the cluster, each
job ends up running, requeued, or failed with a reason)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from service.fine_tuning.launcher import Launcher, job_context
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import JobRow
from service.platform.quotas import LimitPolicy
from service.platform.settings import Settings
from service.protocol.fine_tuning import ResourceOptions, TrainingSpec

log = logging.getLogger(__name__)


@dataclass
class JobScheduler:
    settings: Settings
    store: JobStore
    launcher: Launcher
    limits: LimitPolicy | None = None  # None: the settings' defaults, no overrides
    ticks: int = 0
    last_error: str | None = None
    _waiting_told: dict[str, str] = field(default_factory=dict)  # job id -> the wait last put in its events

    def __post_init__(self) -> None:
        self.limits = self.limits or LimitPolicy.of(self.settings)

    def probe(self) -> str:
        """Health: raises while the last pass failed."""
        if self.last_error:
            raise RuntimeError(f"scheduler failing: {self.last_error}")
        return f"{self.ticks} passes"

    def tick(self) -> None:
        """One pass: reconcile submitted jobs, then submit, oldest first, what may run and fits in what
        the cluster has free (a job whose resources were free when it was submitted only waits for them
        when the cluster shrinks meanwhile: its run fails after `training_capacity_wait_s`)."""
        for job in self.store.non_terminal():
            if job.submission_id:
                self._reconcile(job)
        jobs = self.store.non_terminal()
        if not any(job.status == JobStatus.QUEUED and not job.submission_id for job in jobs):
            return  # nothing to submit: no need to ask the cluster (a GCS call a second, on its cores)
        free = self.launcher.free()
        # Submitted runs that have not started yet hold nothing yet: count them as taken.
        for job in jobs:
            if job.status == JobStatus.QUEUED and job.submission_id:
                free = subtract(free, demand(_spec(job).resources))
        for job in jobs:
            if job.status == JobStatus.QUEUED and not job.submission_id:
                free = self._maybe_submit(job, free)

    async def run_forever(self, interval_s: float = 1.0) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
                self.ticks += 1
                self.last_error = None
            except Exception as exc:  # keep scheduling; the next tick retries
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduler tick failed")
            await asyncio.sleep(interval_s)

    def _maybe_submit(self, job: JobRow, free: dict[str, float]) -> dict[str, float]:
        """Submit `job` if its tenant may run another and `free` holds its resources; what stays free."""
        running_jobs = self.limits(job.tenant_id).running_jobs
        if self.store.submitted_count(job.tenant_id) >= running_jobs:
            return free
        spec = _spec(job)
        needed = demand(spec.resources)
        if not fits(needed, free):
            wait = (
                f"Waiting for free resources: needs {_describe(needed)}, "
                f"the cluster has {_describe(free)} free"
            )
            if self._waiting_told.get(job.id) != wait:
                self._waiting_told[job.id] = wait
                self.store.add_event(job.id, wait)
            return free
        submission_id = self.store.claim_submission(job.id)
        if submission_id is None:
            return free
        try:
            self.launcher.submit(submission_id, job_context(self.settings, spec))
        except Exception as exc:
            self.store.release_submission(job.id)
            self.store.add_event(job.id, f"Could not submit to Ray, will retry: {exc}", level="warn")
            return free
        self._waiting_told.pop(job.id, None)
        self.store.add_event(job.id, f"Submitted to Ray as job {submission_id}")
        if not wants_its_run(self.store.get(job.id)):
            # Paused or cancelled while it was being submitted: that stop found no Ray job to stop yet.
            self.launcher.stop(submission_id)
        return subtract(free, needed)

    def _reconcile(self, job: JobRow) -> None:
        info = self.launcher.info(job.submission_id)
        if info.is_active:
            return
        current = self.store.get(job.id)
        if current is None or JobStatus(current.status).is_terminal:
            return  # the driver (or a cancel) already finished it
        if current.stop_requested or current.status == JobStatus.PAUSED:
            self.store.release_stopped_run(job.id)  # paused: may be resumed; resumed already: runs again
            return
        if info.state == "LOST" and current.attempts < self.settings.training_max_attempts:
            # The run vanished with its cluster: schedule it again from the start.
            if current.status == JobStatus.RUNNING:
                self.store.transition(
                    job.id,
                    JobStatus.QUEUED,
                    f"Run lost ({info.message}); requeued",
                    level="warn",
                    submission_id=None,
                )
            else:
                self.store.release_submission(job.id)
                self.store.add_event(job.id, f"Run lost ({info.message}); resubmitting", level="warn")
            return
        if info.state == "STOPPED":
            error = {
                "code": "job_stopped",
                "message": "The Ray job was stopped outside tuneserve.",
                "param": None,
            }
        elif info.state == "LOST":
            error = out_of_attempts(current.attempts, info.message)
        else:
            detail = info.message.strip().splitlines()[-1] if info.message.strip() else info.state
            error = {
                "code": "training_failed",
                "message": f"The training run ended without a result: {detail}",
                "param": None,
            }
        self.store.transition(job.id, JobStatus.FAILED, error["message"], level="error", error=error)


def wants_its_run(job: JobRow | None) -> bool:
    """Whether a run of `job` should go on: not once the job is paused, cancelled or otherwise finished."""
    return job is not None and job.status in (JobStatus.QUEUED, JobStatus.RUNNING) and not job.stop_requested


def out_of_attempts(attempts: int, detail: str) -> dict:
    """The error of a job whose runs the cluster interrupted as often as a job may be run."""
    message = (
        f"The run was interrupted by the cluster {attempts} time(s), as often as a job may be run "
        f"(TUNESERVE_TRAINING_MAX_ATTEMPTS); its checkpoints are kept. Last: {detail}"
    )
    return {"code": "job_lost", "message": message, "param": None}


def demand(resources: ResourceOptions) -> dict[str, float]:
    """What a run's workers reserve, in Ray's resource names."""
    needed = {"CPU": float(resources.num_workers * resources.cpus_per_worker)}
    if resources.use_gpu:
        needed["GPU"] = float(resources.num_workers)
    return needed


def fits(needed: dict[str, float], free: dict[str, float]) -> bool:
    """Whether `free` covers `needed`; an empty `free` means the launcher cannot tell: assume it fits."""
    return not free or all(free.get(name, 0.0) >= amount for name, amount in needed.items())


def subtract(free: dict[str, float], taken: dict[str, float]) -> dict[str, float]:
    if not free:
        return free
    return {**free, **{name: free.get(name, 0.0) - amount for name, amount in taken.items()}}


def _describe(resources: dict[str, float]) -> str:
    shown = {name: amount for name, amount in resources.items() if name in ("CPU", "GPU")}
    return ", ".join(f"{max(amount, 0):g} {name}" for name, amount in sorted(shown.items())) or "nothing"


def _spec(job: JobRow) -> TrainingSpec:
    return TrainingSpec.model_validate(job.spec)
