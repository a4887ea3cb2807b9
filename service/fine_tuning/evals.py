"""The evaluations a fine-tuning job asked for (`evals` on the job): when the job succeeds, a run of each on
the new model and on its base model (for reference), started on the eval runner; the job's events say so."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy import select

from service.evals.runs import EvalRunner
from service.evals.service import EvalService
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import EvalRunRow, JobRow
from service.platform.errors import ApiError
from service.protocol.evals import CompletionsDataSource, RunCreate

log = logging.getLogger(__name__)


@dataclass
class JobEvals:
    jobs: JobStore
    evals: EvalService
    runner: EvalRunner
    _jobs_seen: set[str] = field(default_factory=set)

    async def run_forever(self, interval_s: float = 2.0) -> None:
        while True:
            try:
                for run_id in await asyncio.to_thread(self.create_runs):
                    self.runner.start(run_id)
            except Exception:  # keep watching; the next tick retries
                log.exception("starting the evaluations of fine-tuning jobs failed")
            await asyncio.sleep(interval_s)

    def create_runs(self) -> list[str]:
        """Create the runs that newly succeeded jobs asked for; returns their ids for the caller to start."""
        with self.jobs.db.session() as s:
            jobs = [
                j
                for j in s.scalars(select(JobRow).where(JobRow.status == JobStatus.SUCCEEDED.value))
                if j.id not in self._jobs_seen
            ]
        created = []
        for job in jobs:
            self._jobs_seen.add(job.id)
            if not job.request.get("evals") or self.evals.job_runs(job.id):
                continue
            runs = []
            for requested in job.request["evals"]:
                for model in (job.fine_tuned_model, job.model):
                    try:
                        runs.append(self._create_run(job, requested, model).id)
                    except (ApiError, ValidationError) as exc:
                        self.jobs.add_event(
                            job.id, f"Evaluation {requested['eval_id']} on {model} not started: {exc}", "warn"
                        )
            if runs:
                self.jobs.add_event(job.id, f"Evaluation runs started: {', '.join(runs)}")
            created += runs
        return created

    def _create_run(self, job: JobRow, requested: dict, model: str) -> EvalRunRow:
        source = {"type": "completions", **(requested.get("data_source") or {}), "model": model}
        role = "fine-tuned model" if model == job.fine_tuned_model else "base model"
        req = RunCreate(name=f"{job.id}: {role} {model}", data_source=CompletionsDataSource(**source))
        return self.evals.create_run(job.tenant_id, requested["eval_id"], req, job_id=job.id)
