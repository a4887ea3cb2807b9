"""The scheduler: submits queued jobs to the launcher within each tenant's limit, and reconciles every
non-terminal job with its run (the durable part: after a restart of the service, or of the cluster, each
job ends up running, requeued, or failed with a reason)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from service.fine_tuning.launcher import Launcher, job_context
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import JobRow
from service.platform.settings import Settings
from service.protocol.fine_tuning import TrainingSpec

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


@dataclass
class JobScheduler:
    settings: Settings
    store: JobStore
    launcher: Launcher
    ticks: int = 0
    last_error: str | None = None

    def probe(self) -> str:
        """Health: raises while the last pass failed."""
        if self.last_error:
            raise RuntimeError(f"scheduler failing: {self.last_error}")
        return f"{self.ticks} passes"

    def tick(self) -> None:
        """One pass: reconcile submitted jobs, then submit what may run."""
        for job in self.store.non_terminal():
            if job.submission_id:
                self._reconcile(job)
        for job in self.store.non_terminal():
            if job.status == JobStatus.QUEUED and not job.submission_id:
                self._maybe_submit(job)

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

    def _maybe_submit(self, job: JobRow) -> None:
        if self.store.submitted_count(job.tenant_id) >= self.settings.max_running_jobs_per_tenant:
            return
        submission_id = f"{job.id}-{job.attempts + 1}"
        if not self.store.claim_submission(job.id, submission_id):
            return
        try:
            self.launcher.submit(
                submission_id, job_context(self.settings, TrainingSpec.model_validate(job.spec))
            )
        except Exception as exc:
            self.store.release_submission(job.id)
            self.store.add_event(job.id, f"Could not submit to Ray, will retry: {exc}", level="warn")
            return
        self.store.add_event(job.id, f"Submitted to Ray as job {submission_id}")

    def _reconcile(self, job: JobRow) -> None:
        info = self.launcher.info(job.submission_id)
        if info.is_active:
            return
        current = self.store.get(job.id)
        if current is None or JobStatus(current.status).is_terminal:
            return  # the driver (or a cancel) already finished it
        if current.status == JobStatus.PAUSED:
            self.store.release_submission(job.id)  # the paused run has stopped: the job may be resumed
            return
        if info.state == "LOST" and current.attempts < MAX_ATTEMPTS:
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
            error = {
                "code": "job_lost",
                "message": f"The run was lost {current.attempts} times: {info.message}",
                "param": None,
            }
        else:
            detail = info.message.strip().splitlines()[-1] if info.message.strip() else info.state
            error = {
                "code": "training_failed",
                "message": f"The training run ended without a result: {detail}",
                "param": None,
            }
        self.store.transition(job.id, JobStatus.FAILED, error["message"], level="error", error=error)
