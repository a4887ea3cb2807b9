"""Running evaluation runs: the API process (the single writer of a run's rows) splits a run's items into
batches, evaluates each batch as a task (`evals.runner.evaluate_batch`, a Ray task in the stack) that calls
this service's own API with a key made for the run, and stores each batch's output items and totals as they
come back. A run resumes after a restart with the items it has no output for yet; a canceled or deleted run
stops at its next batch. Runs that fine-tuning jobs ask for are started here too, when the job succeeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

from pydantic import ValidationError
from sqlalchemy import select

from evals.runner import RunSpec, evaluate_batch
from evals.summary import fold
from service.context import AppContext
from service.db import EvalOutputItemRow, EvalRow, EvalRunRow, FineTunedModelRow, JobRow
from service.db.models import now
from service.errors import ApiError
from service.evals import ACTIVE, EvalService, run_result
from service.jobs.store import JobStore
from service.protocol.evals import CompletionsDataSource, RunCreate
from service.registry import ModelRegistry
from service.tasks import TaskRunner

log = logging.getLogger(__name__)
# API keys made for runs are named so; any left over by a crash are revoked at start.
KEY_NAME = "eval-run:"
MANIFEST = "manifest.json"


class EvalRunner:
    def __init__(self, ctx: AppContext, tasks: TaskRunner) -> None:
        self.ctx = ctx
        self.tasks = tasks
        self._running: dict[str, asyncio.Task] = {}
        self._jobs_seen: set[str] = set()
        self._manifest_lock = asyncio.Lock()

    def start(self, run_id: str) -> None:
        if run_id not in self._running:
            self._running[run_id] = asyncio.create_task(self._drive(run_id))

    def resume(self) -> None:
        """After a restart: revoke the keys of runs that died with the last process, restart active runs."""
        for key in self.ctx.keys.list():
            if key.name and key.name.startswith(KEY_NAME) and key.revoked_at is None:
                self.ctx.keys.revoke(key.id)
        with self.ctx.db.session() as s:
            ids = list(s.scalars(select(EvalRunRow.id).where(EvalRunRow.status.in_(ACTIVE))))
        for run_id in ids:
            self.start(run_id)

    async def run_forever(self, interval_s: float = 2.0) -> None:
        """Start the evaluations that newly succeeded fine-tuning jobs asked for."""
        while True:
            try:
                for run_id in await asyncio.to_thread(self.start_job_evals):
                    self.start(run_id)
            except Exception:  # noqa: BLE001 - keep watching; the next tick retries
                log.exception("starting the evaluations of fine-tuning jobs failed")
            await asyncio.sleep(interval_s)

    # Fine-tuning jobs -----------------------------------------------------------------------------
    def start_job_evals(self) -> list[str]:
        """Create the runs that newly succeeded jobs asked for (on the new model and on its base model, for
        reference); returns their ids for the caller to start."""
        with self.ctx.db.session() as s:
            jobs = [
                j
                for j in s.scalars(select(JobRow).where(JobRow.status == "succeeded"))
                if j.id not in self._jobs_seen
            ]
        started = []
        for job in jobs:
            self._jobs_seen.add(job.id)
            if not job.request.get("evals") or EvalService(self.ctx).job_runs(job.id):
                continue
            runs = []
            for requested in job.request["evals"]:
                for model in (job.fine_tuned_model, job.model):
                    try:
                        run = self.create_job_run(job, requested, model)
                    except (ApiError, ValidationError) as exc:
                        JobStore(self.ctx.db).add_event(
                            job.id, f"Evaluation {requested['eval_id']} on {model} not started: {exc}", "warn"
                        )
                        continue
                    runs.append(run.id)
            if runs:
                JobStore(self.ctx.db).add_event(job.id, f"Evaluation runs started: {', '.join(runs)}")
            started += runs
        return started

    def create_job_run(self, job: JobRow, requested: dict, model: str) -> EvalRunRow:
        source = {"type": "completions", **(requested.get("data_source") or {}), "model": model}
        role = "fine-tuned model" if model == job.fine_tuned_model else "base model"
        req = RunCreate(name=f"{job.id}: {role} {model}", data_source=CompletionsDataSource(**source))
        return EvalService(self.ctx).create_run(job.tenant_id, requested["eval_id"], req, job_id=job.id)

    # Driving a run --------------------------------------------------------------------------------
    async def _drive(self, run_id: str) -> None:
        try:
            await self._run(run_id)
        except Exception as exc:  # noqa: BLE001 - a run that cannot go on fails with the reason
            log.exception("evaluation run %s failed", run_id)
            self._finish(run_id, "failed", {"code": "run_failed", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._running.pop(run_id, None)
        await self._record_on_manifest(run_id)

    async def _run(self, run_id: str) -> None:
        with self.ctx.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            if run is None or run.status not in ACTIVE:
                return
            run.status = "in_progress"
            done = set(s.scalars(select(EvalOutputItemRow.index).where(EvalOutputItemRow.run_id == run_id)))
            ev = s.get(EvalRow, run.eval_id)
        raw = await asyncio.to_thread(self.ctx.store.get_bytes, run.items_key)
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        todo = [(i, r) for i, r in enumerate(rows) if i not in done]
        settings = self.ctx.settings
        size = settings.eval_batch_size
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        key_row, key = self.ctx.keys.create(run.tenant_id, name=KEY_NAME + run_id)
        try:
            spec = self._spec(run, ev, key)
            slots = asyncio.Semaphore(max(1, settings.eval_concurrency // spec.concurrency))
            # Batches are stored one at a time: each adds to the run's totals (read, fold, write).
            storing = asyncio.Lock()

            async def evaluate(batch: list[tuple[int, dict]]) -> None:
                async with slots:
                    if not self._is_active(run_id):
                        return
                    try:
                        items = await self.tasks.run(
                            evaluate_batch, spec, batch, cpus=settings.eval_task_cpus
                        )
                    except Exception as exc:  # noqa: BLE001 - the task died: its items are errored
                        log.exception("evaluation batch of run %s failed", run_id)
                        items = [_errored(i, row, run.model, exc) for i, row in batch]
                    async with storing:
                        await asyncio.to_thread(self._store, run_id, items)

            await asyncio.gather(*(evaluate(b) for b in batches))
        finally:
            self.ctx.keys.revoke(key_row.id)
        self._finish(run_id, "completed", None)

    def _spec(self, run: EvalRunRow, ev: EvalRow, key: str) -> RunSpec:
        settings = self.ctx.settings
        ds = run.data_source
        base_path = ""
        if run.model:
            base_path = str(ModelRegistry(self.ctx).resolve(run.tenant_id, run.model).base_path)
        return RunSpec(
            api_url=api_url_for_tasks(settings),
            api_key=key,
            model=run.model,
            tokenizer_path=base_path,
            testing_criteria=ev.testing_criteria,
            source_type=ds["type"],
            input_messages=ds.get("input_messages"),
            sampling_params=ds.get("sampling_params", {}),
            retrieval=ds.get("retrieval"),
            concurrency=min(settings.eval_batch_size, settings.eval_concurrency),
            embedding=(
                str(settings.embedding_model) if settings.embedding_model else None,
                settings.embedding_dtype,
            ),
        )

    def _is_active(self, run_id: str) -> bool:
        with self.ctx.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            return run is not None and run.status in ACTIVE

    def _store(self, run_id: str, items: list[dict]) -> None:
        """Add a batch's output items and totals in one transaction (dropped if the run was stopped)."""
        with self.ctx.db.session() as s:
            run = s.get(EvalRunRow, run_id, with_for_update=True)
            if run is None or run.status not in ACTIVE:
                return
            for item in items:
                s.add(
                    EvalOutputItemRow(
                        id="outputitem_" + secrets.token_hex(12),
                        run_id=run_id,
                        index=item["datasource_item_id"],
                        status=item["status"],
                        item=item["datasource_item"],
                        sample=item["sample"],
                        results=item["results"],
                    )
                )
            run.summary = fold(run.summary, items)

    def _finish(self, run_id: str, status: str, error: dict | None) -> None:
        with self.ctx.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            if run is not None and run.status in ACTIVE:
                run.status, run.error, run.finished_at = status, error, now()

    async def _record_on_manifest(self, run_id: str) -> None:
        """A job's evaluation results go into its model's manifest beside the adapter (its lineage)."""
        with self.ctx.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            job = s.get(JobRow, run.job_id) if run is not None and run.job_id else None
            model = s.get(FineTunedModelRow, job.fine_tuned_model) if job and job.fine_tuned_model else None
            ev = s.get(EvalRow, run.eval_id) if run is not None else None
        if model is None or run.status in ACTIVE:
            return
        entry = {**run_result(run, model.id), "eval_name": ev.name if ev else None}
        key = model.adapter_prefix + MANIFEST
        async with self._manifest_lock:
            try:
                manifest = json.loads(await asyncio.to_thread(self.ctx.store.get_bytes, key))
            except Exception:  # noqa: BLE001 - no manifest (an imported adapter): nothing to add to
                return
            manifest["evals"] = [e for e in manifest.get("evals", []) if e["run_id"] != run.id] + [entry]
            await asyncio.to_thread(self.ctx.store.put_bytes, key, json.dumps(manifest, indent=2).encode())


def api_url_for_tasks(settings) -> str:  # noqa: ANN001 - Settings
    """Where a task on any node reaches this API: its address, or this node's when bound to all."""
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        import ray

        host = ray.util.get_node_ip_address()
    return f"http://{host}:{settings.port}"


def _errored(index: int, row: dict, model: str, exc: Exception) -> dict:
    return {
        "datasource_item_id": index,
        "datasource_item": row["item"],
        "sample": {
            "model": model,
            "input": [],
            "output": [],
            "error": {"code": "evaluation_failed", "message": str(exc)},
        },
        "results": [],
        "status": "error",
    }
