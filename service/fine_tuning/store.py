"""Persistence of fine-tuning jobs, their events and checkpoints, and the models they produce.

Used by the API, the scheduler, and the training driver running in Ray (same database). Every status
change goes through `transition`, which applies the pure state machine inside one transaction, so a
cancel racing a finishing run cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select

from service.fine_tuning.state import JobStatus, can_transition
from service.platform.db import Database, FineTunedModelRow, JobCheckpointRow, JobEventRow, JobRow
from service.platform.db.filters import where_metadata
from service.platform.db.models import now
from service.platform.ids import new_id
from service.protocol.common import MetadataFilter

NON_TERMINAL = [s.value for s in JobStatus if not s.is_terminal]


@dataclass
class JobStore:
    db: Database

    # Jobs -------------------------------------------------------------------------------------------
    def create(self, row: JobRow, events: Iterable[str] = ()) -> JobRow:
        with self.db.session() as s:
            s.add(row)
            s.flush()
            for message in events:
                s.add(_event(row.id, message))
        return row

    def get(self, job_id: str) -> JobRow | None:
        with self.db.session() as s:
            return s.get(JobRow, job_id)

    def list(
        self, tenant: str, after: str | None, limit: int, metadata: MetadataFilter | None = None
    ) -> tuple[list[JobRow], bool]:
        """Newest first; `after` is the id of the last job of the previous page."""
        q = where_metadata(select(JobRow).where(JobRow.tenant_id == tenant), JobRow.metadata_, metadata)
        return self.db.page(q, after, limit, descending=True)

    def non_terminal(self) -> list[JobRow]:
        return self.db.page(select(JobRow).where(JobRow.status.in_(NON_TERMINAL)))[0]

    def keys_in_use(self) -> set[str]:
        """The objects the unfinished jobs read: training and validation data, and images."""
        with self.db.session() as s:
            specs = s.scalars(select(JobRow.spec).where(JobRow.status.in_(NON_TERMINAL))).all()
        keys = set()
        for spec in specs:
            keys |= {
                spec.get("training_key"),
                spec.get("validation_key"),
                *spec.get("image_files", {}).values(),
            }
        return keys - {None}

    def submitted_count(self, tenant: str) -> int:
        with self.db.session() as s:
            q = select(func.count()).where(
                JobRow.tenant_id == tenant, JobRow.status.in_(NON_TERMINAL), JobRow.submission_id.is_not(None)
            )
            return int(s.scalar(q) or 0)

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        message: str | None = None,
        *,
        level: str = "info",
        only_from: frozenset[JobStatus] | None = None,
        **fields: object,
    ) -> bool:
        """Move the job to `target` if the state machine allows it (and it is in one of `only_from`, when
        given); returns whether it did."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or not can_transition(JobStatus(row.status), target):
                return False
            if only_from is not None and row.status not in only_from:
                return False
            row.status = target.value
            if target == JobStatus.RUNNING and row.started_at is None:
                row.started_at = now()
            if target.is_terminal:
                row.finished_at = now()
            for name, value in fields.items():
                setattr(row, name, value)
            if message:
                s.add(_event(job_id, message, level))
            return True

    def claim_submission(self, job_id: str) -> str | None:
        """Name and record the Ray job that will run this queued job ("<job id>-<run>": Ray never takes a
        name twice); None if another scheduler got it first."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or row.status != JobStatus.QUEUED or row.submission_id is not None:
                return None
            row.runs += 1
            row.attempts += 1
            row.submission_id = f"{job_id}-{row.runs}"
            row.stop_requested = False
            return row.submission_id

    def set_result_files(self, job_id: str, file_ids: list[str]) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                row.result_files = file_ids

    def release_submission(self, job_id: str) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                row.submission_id = None
                row.stop_requested = False

    def release_stopped_run(self, job_id: str) -> None:
        """Let go of a run tuneserve stopped (a pause) once it has ended: a paused job may now be resumed,
        and a job resumed meanwhile is queued for a new run (also when the stopping run had still marked
        it running)."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None:
                return
            if row.status == JobStatus.RUNNING:
                row.status = JobStatus.QUEUED.value
                s.add(_event(job_id, "The paused run has stopped; the job waits for its next run"))
            row.submission_id = None
            row.stop_requested = False

    # Events and checkpoints ------------------------------------------------------------------------
    def add_event(
        self, job_id: str, message: str, level: str = "info", type: str = "message", data: dict | None = None
    ) -> None:
        with self.db.session() as s:
            s.add(_event(job_id, message, level, type, data))

    def events(
        self, job_id: str, after: str | None = None, limit: int = 20, newest_first: bool = True
    ) -> tuple[list[JobEventRow], bool]:
        """Events newest first (OpenAI's order) after the event id `after`; oldest first when following."""
        q = select(JobEventRow).where(JobEventRow.job_id == job_id)
        return self.db.page(q, after, limit, descending=newest_first)

    def last_step(self, job_id: str) -> JobEventRow | None:
        """The newest training-step event (step metrics with a throughput), if any."""
        with self.db.session() as s:
            q = select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.type == "metrics")
            for row in s.scalars(q.order_by(JobEventRow.seq.desc()).limit(5)):
                if "tokens_per_second" in (row.data or {}):
                    return row
        return None

    def metric_events(self, job_id: str) -> list[JobEventRow]:
        """Every step-metrics event of the job, oldest first."""
        q = select(JobEventRow).where(JobEventRow.job_id == job_id, JobEventRow.type == "metrics")
        return self.db.page(q)[0]

    def add_checkpoint(self, job_id: str, step: int, key: str, metrics: dict) -> None:
        """Record a checkpoint (a run resumed before its step records it again: one row per step)."""
        with self.db.session() as s:
            job = s.get(JobRow, job_id)
            model = f"{job.spec['fine_tuned_model']}:ckpt-step-{step}"
            same_step = (JobCheckpointRow.job_id == job_id) & (JobCheckpointRow.step == step)
            row = s.scalars(select(JobCheckpointRow).where(same_step)).first()
            if row is None:
                row = JobCheckpointRow(id=new_id("ftckpt-"), job_id=job_id)
            row.step, row.model, row.key, row.metrics = step, model, key, metrics
            s.add(row)

    def checkpoints(self, job_id: str) -> list[JobCheckpointRow]:
        """Newest first."""
        with self.db.session() as s:
            q = (
                select(JobCheckpointRow)
                .where(JobCheckpointRow.job_id == job_id)
                .order_by(JobCheckpointRow.step.desc())
            )
            return list(s.scalars(q))

    def prune_checkpoints(self, job_id: str, keep: int) -> list[JobCheckpointRow]:
        """Delete the rows of all but the newest `keep` checkpoints and the one of the lowest validation
        loss; returns the deleted rows (their objects are the caller's to delete)."""
        rows = self.checkpoints(job_id)
        validated = [r for r in rows if "valid_loss" in r.metrics]
        best = min(validated, key=lambda r: r.metrics["valid_loss"]) if validated else None
        doomed = [r for r in rows[keep:] if r is not best]
        if doomed:
            with self.db.session() as s:
                s.execute(delete(JobCheckpointRow).where(JobCheckpointRow.id.in_([r.id for r in doomed])))
        return doomed

    # Results ---------------------------------------------------------------------------------------
    def succeed(self, job_id: str, model: FineTunedModelRow, trained_tokens: int) -> bool:
        """Register the model and mark the job succeeded, atomically; False if the job was cancelled."""
        with self.db.session() as s:
            row = s.get(JobRow, job_id, with_for_update=True)
            if row is None or not can_transition(JobStatus(row.status), JobStatus.SUCCEEDED):
                return False
            existing = s.get(FineTunedModelRow, model.id)
            if existing is not None and existing.job_id != job_id:  # never take over another job's model
                raise ValueError(f"the model id {model.id} already belongs to job {existing.job_id}")
            row.status = JobStatus.SUCCEEDED.value
            row.finished_at = now()
            row.fine_tuned_model = model.id
            row.trained_tokens = trained_tokens
            s.merge(model)
            s.add(_event(job_id, f"New fine-tuned model created: {model.id}"))
            s.add(_event(job_id, "The job has successfully completed"))
            return True


def _event(
    job_id: str, message: str, level: str = "info", type: str = "message", data: dict | None = None
) -> JobEventRow:
    return JobEventRow(
        id=new_id("ftevent-"),
        job_id=job_id,
        message=message[:4096],
        level=level,
        type=type,
        data=data,
    )
