"""Fine-tuning jobs: create (validate everything up front), read, follow, cancel, pause and resume.
Scheduling is elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from service.evals.service import EvalService
from service.files.service import FileService
from service.fine_tuning import hyperparams
from service.fine_tuning.dataset_check import DatasetStats, check_dataset, unknown_target_modules
from service.fine_tuning.launcher import Launcher
from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.models.base_models import modalities
from service.models.registry import ModelRegistry, adapter_prefix
from service.platform.db import FileRow, JobCheckpointRow, JobEventRow, JobRow
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.image_fetch import fetch_image
from service.platform.images import FILE_ID_PREFIX, MIME_TYPES, ImageError, check_image
from service.platform.settings import Settings
from service.protocol.common import MetadataFilter
from service.protocol.fine_tuning import (
    FineTuningJob,
    FineTuningJobCreate,
    JobCheckpoint,
    JobError,
    JobEvent,
    TrainingSpec,
)
from trainers.data_format import DatasetError, parse_jsonl

KEEPALIVE_S = 2.0  # a followed job's stream says something at least this often


def validate_training_file(stream: BinaryIO, image_domains: Collection[str] = ()) -> None:
    """The upload check of purpose `fine-tune`: every line parses as a training example (400 naming it)."""
    try:
        parse_jsonl(stream, image_domains=image_domains)
    except DatasetError as exc:
        raise ApiError(400, f"Invalid fine-tuning file: {exc}", param="file", code="invalid_file") from None


def estimate_finish(started_at: int, at: int, step: int, total_steps: int) -> int:
    """When a run that started at `started_at`, at `step` of `total_steps` at time `at`, ends at its pace."""
    return at + round((at - started_at) / max(step, 1) * (total_steps - step))


@dataclass
class JobService:
    settings: Settings
    store: JobStore
    files: FileService
    models: ModelRegistry
    evals: EvalService
    launcher: Launcher | None

    def create(self, tenant: str, req: FineTuningJobCreate) -> JobRow:
        """Blocking (tokenizes the files): call it off the event loop."""
        requested = self.models.resolve(tenant, req.model)
        # Continuing from a fine-tuned model: its base model, and its adapter (and LoRA shape) to start from.
        parent = None if requested.is_base else requested
        model = self.models.resolve(tenant, requested.base_model) if parent else requested
        if parent is not None:
            req = req.model_copy(update={"lora": self.models.lora_options(parent)})
        training = self._fine_tune_file(tenant, req.training_file, "training_file")
        validation = (
            self._fine_tune_file(tenant, req.validation_file, "validation_file")
            if req.validation_file
            else None
        )
        self._check_capacity(req)
        self.evals.check_job_evals(tenant, model.id, req.evals)
        if req.lora.r > self.settings.serving_max_lora_rank:
            raise ApiError(
                400,
                f"LoRA rank {req.lora.r} is above {self.settings.serving_max_lora_rank}, the largest "
                "this stack can serve (TUNESERVE_SERVING_MAX_LORA_RANK).",
                param="lora.r",
                code="invalid_value",
            )
        unknown = unknown_target_modules(model.base_path, req.lora.target_modules)
        if unknown:
            raise ApiError(
                400,
                f"LoRA target module(s) {unknown} not found in {model.id}; use names such as "
                "q_proj, k_proj, v_proj, o_proj, or 'all-linear'.",
                param="lora.target_modules",
                code="invalid_value",
            )
        fetched: dict[str, tuple[bytes, str]] = {}  # linked images (on allowed domains): bytes, MIME type
        read_image = partial(self._read_image, tenant, fetched)
        method = hyperparams.method_of(req)
        check = partial(self._check, model.base_path, max_seq_length=req.max_seq_length, method=method)
        stats = check(self.files.read_bytes(training), param="training_file", read_image=read_image)
        image_refs = set(stats.image_files)
        if validation is not None:
            valid = check(self.files.read_bytes(validation), param="validation_file", read_image=read_image)
            image_refs |= valid.image_files
        hp, learning_rate, lora = hyperparams.resolve_training(req, stats.n_examples)
        job_id = new_id("ftjob-")
        # Unique by construction: the job id is the jobs table's key (a short random tail was not, and a
        # collision would have handed one tenant's model id to another).
        name = f"{model.id}:{req.suffix or 'ft'}-{job_id.removeprefix('ftjob-')}"
        made: list[str] = []  # vision files made from fetched images: removed again if no job comes of them
        image_files = self._image_keys(tenant, image_refs, fetched, made)
        spec = TrainingSpec(
            job_id=job_id,
            tenant=tenant,
            base_model=model.id,
            base_model_path=str(model.base_path),
            fine_tuned_model=name,
            training_file=training.id,
            training_key=training.key,
            training_sha256=training.sha256,
            validation_file=validation.id if validation else None,
            validation_key=validation.key if validation else None,
            validation_sha256=validation.sha256 if validation else None,
            n_train_examples=stats.n_examples,
            n_train_tokens=stats.n_tokens,
            hyperparameters=hp,
            stop_when_converged=hyperparams.stops_when_converged(req),
            learning_rate=learning_rate,
            seed=req.seed if req.seed is not None else secrets.randbelow(2**31),
            lora=lora,
            method=method,
            parent_model=parent.id if parent else None,
            parent_adapter_prefix=parent.adapter_prefix if parent else None,
            deepspeed=req.deepspeed,
            resources=req.resources,
            max_seq_length=req.max_seq_length,
            adapter_prefix=adapter_prefix(name),
            checkpoint_prefix=f"jobs/{job_id}/checkpoints/",
            integrations=req.integrations,
            vision="image" in modalities(model.base_path),
            image_files=image_files,
            image_url_domains=self.settings.image_url_domains,
        )
        row = JobRow(
            id=job_id,
            tenant_id=tenant,
            # Validated above: the job is created queued, with its events, in one transaction (two left a
            # job in validating_files forever when the process died between them).
            status=JobStatus.QUEUED.value,
            model=requested.id,
            suffix=req.suffix,
            request=req.model_dump(mode="json"),
            spec=spec.model_dump(mode="json"),
            metadata_=req.metadata,
        )
        events = [
            f"Validated training file {training.id}: {stats.n_examples} examples, "
            f"{stats.n_tokens} tokens ({stats.n_trained_tokens} trained on)",
            "Fine-tuning job queued until resources are free",
        ]
        try:
            self.store.create(row, events=events)
        except BaseException:
            for file_id in made:
                with contextlib.suppress(Exception):  # the job's own error is the one to report
                    self.files.delete(tenant, file_id)
            raise
        return self.get(tenant, job_id)

    def _check_capacity(self, req: FineTuningJobCreate) -> None:
        """A job the cluster can never place would wait forever: refuse it now."""
        res = req.resources
        capacity = self.launcher.capacity() if self.launcher is not None else {}
        if not capacity:
            return
        cpus = res.num_workers * res.cpus_per_worker
        if cpus > capacity.get("CPU", 0):
            raise ApiError(
                400,
                f"The job asks for {cpus} CPUs ({res.num_workers} workers x {res.cpus_per_worker}); "
                f"the cluster has {capacity.get('CPU', 0):g}.",
                param="resources",
                code="invalid_value",
            )
        if res.use_gpu and res.num_workers > capacity.get("GPU", 0):
            raise ApiError(
                400,
                f"The job asks for {res.num_workers} GPUs; the cluster has {capacity.get('GPU', 0):g}.",
                param="resources.use_gpu",
                code="invalid_value",
            )

    def _fine_tune_file(self, tenant: str, file_id: str, param: str) -> FileRow:
        return self.files.get(tenant, file_id, param=param, purpose="fine-tune")

    def _read_image(self, tenant: str, fetched: dict[str, tuple[bytes, str]], ref: str) -> bytes:
        """An image a training file names: a file the tenant uploaded with purpose `vision`, or an http(s)
        URL on an allowed domain (fetched into `fetched`). KeyError says why it cannot be used."""
        if not ref.startswith(FILE_ID_PREFIX):
            if ref not in fetched:
                try:
                    data = fetch_image(ref, self.settings.image_url_domains)
                    fetched[ref] = data, MIME_TYPES[check_image(data).format]
                except ImageError as exc:
                    raise KeyError(f"image {ref[:80]}: {exc}") from None
            return fetched[ref][0]
        file_id = ref
        try:
            row = self.files.get(tenant, file_id)
        except ApiError:
            raise KeyError(f"image {file_id}: no such file (or not yours)") from None
        if row.purpose != "vision":
            raise KeyError(f"image {file_id}: the file has purpose '{row.purpose}'; images need 'vision'")
        return self.files.read_bytes(row)

    def _image_keys(
        self, tenant: str, refs: set[str], fetched: dict[str, tuple[bytes, str]], made: list[str]
    ) -> dict[str, str]:
        """Where the run reads each image from: an uploaded file's object, or, for a URL, the object of a
        `vision` file of the tenant made from what was fetched (the run never fetches; what it trains on
        is what was checked). The ids of the files made are added to `made`."""
        keys = {}
        for ref in sorted(refs):
            if ref in fetched:
                name = ref.rsplit("/", 1)[-1].split("?", 1)[0][:100] or "image"
                data, mime = fetched[ref]
                row = self.files.create(tenant, name, "vision", data, mime)
                made.append(row.id)
                keys[ref] = row.key
            else:
                keys[ref] = self.files.get(tenant, ref).key
        return keys

    def _check(
        self,
        base_path: Path,
        data: bytes,
        max_seq_length: int,
        param: str,
        read_image: Callable[[str], bytes] | None = None,
        method: str = "supervised",
    ) -> DatasetStats:
        try:
            return check_dataset(
                base_path, data, max_seq_length, read_image, self.settings.image_url_domains, method
            )
        except DatasetError as exc:
            raise ApiError(
                400, f"Invalid {param.replace('_', ' ')}: {exc}", param=param, code="invalid_training_file"
            ) from None

    def get(self, tenant: str, job_id: str) -> JobRow:
        return self.store.db.get_or_404(JobRow, job_id, "fine_tuning_job_id", tenant_id=tenant)

    def list(
        self, tenant: str, after: str | None, limit: int, metadata: MetadataFilter | None = None
    ) -> tuple[list[JobRow], bool]:
        return self.store.list(tenant, after, limit, metadata)

    async def follow(self, job_id: str) -> AsyncIterator[str]:
        """Every event, oldest first, as Server-Sent Events, until the job has ended; a keep-alive comment
        every `KEEPALIVE_S` while nothing happens (proxies keep the connection, the stream its checks)."""
        last: str | None = None
        idle_since = time.monotonic()
        while True:
            rows, _ = await asyncio.to_thread(self.store.events, job_id, last, 1000, False)
            for row in rows:
                yield f"data: {self.event_to_api(row).model_dump_json()}\n\n"
                last = row.id
            job = await asyncio.to_thread(self.store.get, job_id)
            if job is None or (JobStatus(job.status).is_terminal and not rows):
                yield "data: [DONE]\n\n"
                return
            if rows:
                idle_since = time.monotonic()
            else:
                if time.monotonic() - idle_since >= KEEPALIVE_S:
                    idle_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)

    def cancel(self, tenant: str, job_id: str) -> JobRow:
        """Stop the job for good; 409 once it has finished."""
        return self._stop(
            tenant,
            job_id,
            JobStatus.CANCELLED,
            "Job cancelled by the user",
            lambda row: ApiError(
                409,
                f"Job {job_id} is already {row.status} and cannot be cancelled.",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            ),
        )

    def cancel_all(self, tenant: str) -> int:
        """Cancel every job of `tenant` that has not finished (the tenant is being disabled)."""
        jobs = [j for j in self.store.non_terminal() if j.tenant_id == tenant]
        for job in jobs:
            with contextlib.suppress(ApiError):  # finished meanwhile
                self.cancel(tenant, job.id)
        return len(jobs)

    def pause(self, tenant: str, job_id: str) -> JobRow:
        """Stop the job's run; its last checkpoint is where `resume` continues. The scheduler lets go of the
        run once it has stopped."""
        return self._stop(
            tenant,
            job_id,
            JobStatus.PAUSED,
            "Job paused by the user",
            lambda row: ApiError(
                400,
                f"Job {job_id} is {row.status}; only a queued or running job can be paused.",
                param="fine_tuning_job_id",
                code="job_not_pausable",
            ),
        )

    def _stop(
        self, tenant: str, job_id: str, target: JobStatus, message: str, refused: Callable[[JobRow], ApiError]
    ) -> JobRow:
        """Move the job to `target` (else the error `refused` makes of it) and stop its Ray run, if any."""
        row = self.get(tenant, job_id)
        if not self.store.transition(job_id, target, message, stop_requested=True):
            raise refused(row)
        row = self.get(tenant, job_id)
        if row.submission_id and self.launcher is not None:
            self.launcher.stop(row.submission_id)
        return row

    def resume(self, tenant: str, job_id: str) -> JobRow:
        """Queue a paused job again; its run continues from the job's last checkpoint."""
        row = self.get(tenant, job_id)
        if row.status != JobStatus.PAUSED:
            raise ApiError(
                400,
                f"Job {job_id} is {row.status}; only a paused job can be resumed.",
                param="fine_tuning_job_id",
                code="job_not_paused",
            )
        checkpoints = self.store.checkpoints(job_id)
        where = f"from the checkpoint of step {checkpoints[0].step}" if checkpoints else "from the start"
        if row.submission_id:  # the scheduler submits it again once the paused run has stopped
            where = "from its last checkpoint once the paused run has stopped"
        # A resumed job gets a fresh allowance of attempts for runs lost to the cluster.
        self.store.transition(
            job_id, JobStatus.QUEUED, f"Job resumed by the user; it continues {where}", attempts=0
        )
        return self.get(tenant, job_id)

    def to_api(self, row: JobRow) -> FineTuningJob:
        """The job with the results of the evaluations it asked for."""
        spec = TrainingSpec.model_validate(row.spec)
        evals = self.evals.job_results(row.id, row.fine_tuned_model)
        return FineTuningJob(
            id=row.id,
            created_at=row.created_at,
            error=JobError(**row.error) if row.error else None,
            fine_tuned_model=row.fine_tuned_model,
            finished_at=row.finished_at,
            hyperparameters=spec.hyperparameters,
            model=row.model,
            organization_id=row.tenant_id,
            seed=spec.seed,
            status=row.status,
            trained_tokens=row.trained_tokens,
            training_file=spec.training_file,
            validation_file=spec.validation_file,
            metadata=row.metadata_,
            user_provided_suffix=row.suffix,
            result_files=row.result_files or [],
            integrations=spec.integrations,
            method={
                "type": spec.method,
                spec.method: {"hyperparameters": spec.hyperparameters.model_dump(exclude_none=True)},
            },
            lora=spec.lora,
            deepspeed=spec.deepspeed,
            resources=spec.resources,
            max_seq_length=spec.max_seq_length,
            evals=evals,
            estimated_finish=self._estimated_finish(row),
        )

    def _estimated_finish(self, row: JobRow) -> int | None:
        """For a running job: when it should end, from the pace of its steps so far."""
        last = self.store.last_step(row.id) if row.status == JobStatus.RUNNING and row.started_at else None
        if last is None:
            return None
        return estimate_finish(row.started_at, last.created_at, last.data["step"], last.data["total_steps"])

    @staticmethod
    def event_to_api(row: JobEventRow) -> JobEvent:
        return JobEvent(
            id=row.id,
            created_at=row.created_at,
            level=row.level,
            message=row.message,
            data=row.data,
            type=row.type,
        )

    @staticmethod
    def checkpoint_to_api(job: JobRow, row: JobCheckpointRow) -> JobCheckpoint:
        return JobCheckpoint(
            id=row.id,
            created_at=row.created_at,
            fine_tuned_model_checkpoint=row.model,
            fine_tuning_job_id=job.id,
            metrics={**row.metrics, "step": row.step},
            step_number=row.step,
        )
