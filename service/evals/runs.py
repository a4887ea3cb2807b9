"""Running evaluation runs: the API process (the single writer of a run's rows) splits a run's items into
batches, evaluates each batch as a task (`evals.runner.evaluate_batch`, a Ray task in the stack) that calls
this service's own API with a key made for the run, and stores each batch's output items and totals as they
come back. A run resumes after a restart with the items it has no output for yet; a canceled or deleted run
stops at its next batch. (Runs that fine-tuning jobs ask for are created by `service.fine_tuning.evals`.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from evals.runner import RunSpec, evaluate_batch
from evals.summary import fold
from service.evals.service import ACTIVE, run_result
from service.models.registry import ModelRegistry
from service.platform.auth import KeyStore
from service.platform.db import (
    Database,
    EvalOutputItemRow,
    EvalRow,
    EvalRunRow,
    FineTunedModelRow,
    JobRow,
)
from service.platform.db.models import now
from service.platform.fair_share import FairShare
from service.platform.ids import new_id
from service.platform.settings import Settings
from service.platform.storage import ObjectStore
from service.platform.tasks import Background, TaskRunner
from service.protocol.admin import EVAL_RUN_KEY_NAME
from service.protocol.fine_tuning import ADAPTER_MANIFEST

log = logging.getLogger(__name__)
# API keys made for runs are named so (they may only ask for answers); any left over by a crash are
# revoked at start.
KEY_NAME = EVAL_RUN_KEY_NAME
REVOKED = {"code": "api_key_revoked", "message": "The API key that started this run was revoked."}


@dataclass
class EvalRunner:
    settings: Settings
    db: Database
    store: ObjectStore
    keys: KeyStore
    models: ModelRegistry
    tasks: TaskRunner
    background: Background
    _manifest_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _share: FairShare | None = None  # the tasks in flight over all runs, shared between tenants

    def __post_init__(self) -> None:
        self._share = FairShare(self.settings.eval_tasks_in_flight)

    def start(self, run_id: str) -> None:
        """Drive the run in the background (from any thread); a run already driven is left alone."""
        self.background.drive(run_id, lambda: self._drive(run_id))

    def resume(self) -> None:
        """After a restart: revoke the keys of runs that died with the last process, restart active runs."""
        for key in self.keys.list():
            if key.name and key.name.startswith(KEY_NAME) and key.revoked_at is None:
                self.keys.revoke(key.id)
        with self.db.session() as s:
            ids = list(s.scalars(select(EvalRunRow.id).where(EvalRunRow.status.in_(ACTIVE))))
        for run_id in ids:
            self.start(run_id)

    # Driving a run --------------------------------------------------------------------------------
    async def _drive(self, run_id: str) -> None:
        try:
            await self._run(run_id)
        except Exception as exc:  # a run that cannot go on fails with the reason
            log.exception("evaluation run %s failed", run_id)
            error = {"code": "run_failed", "message": f"{type(exc).__name__}: {exc}"}
            await asyncio.to_thread(self._finish, run_id, "failed", error)
        await self._record_on_manifest(run_id)

    async def _run(self, run_id: str) -> None:
        begun = await asyncio.to_thread(self._begin, run_id)
        if begun is None:
            return
        run, todo, key_id, spec = begun
        settings = self.settings
        size = settings.eval_batch_size
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        try:
            slots = asyncio.Semaphore(max(1, settings.eval_concurrency // spec.concurrency))
            # Batches are stored one at a time: each adds to the run's totals (read, fold, write).
            storing = asyncio.Lock()

            async def evaluate(batch: list[tuple[int, dict]]) -> None:
                async with slots, self._share.slot(run.tenant_id):
                    if not await asyncio.to_thread(self._is_active, run_id):
                        return
                    try:
                        items = await self.tasks.run(
                            evaluate_batch, spec, batch, cpus=settings.eval_task_cpus
                        )
                    except Exception as exc:  # the task died: its items are errored
                        log.exception("evaluation batch of run %s failed", run_id)
                        items = [_errored(i, row, run.model, exc) for i, row in batch]
                    async with storing:
                        await asyncio.to_thread(self._store, run_id, items)

            await asyncio.gather(*(evaluate(b) for b in batches))
        finally:
            await asyncio.to_thread(self.keys.revoke, key_id)
        await asyncio.to_thread(self._finish, run_id, "completed", None)

    def _begin(self, run_id: str) -> tuple[EvalRunRow, list[tuple[int, dict]], str, RunSpec] | None:
        """Mark the run in progress; its items without output yet, and a key and spec to evaluate them."""
        with self.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            if run is None or run.status not in ACTIVE:
                return None
            if not self.keys.key_valid(run.created_by_key):
                run.status, run.error, run.finished_at = "failed", REVOKED, now()
                return None  # no key is made for a run whose authority is gone
            run.status = "in_progress"
            done = set(s.scalars(select(EvalOutputItemRow.index).where(EvalOutputItemRow.run_id == run_id)))
            ev = s.get(EvalRow, run.eval_id)
        raw = self.store.get_bytes(run.items_key)
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        key_row, key = self.keys.create(run.tenant_id, name=KEY_NAME + run_id)
        try:
            spec = self._spec(run, ev, key)
        except Exception:
            self.keys.revoke(key_row.id)
            raise
        return run, [(i, r) for i, r in enumerate(rows) if i not in done], key_row.id, spec

    def _spec(self, run: EvalRunRow, ev: EvalRow, key: str) -> RunSpec:
        settings = self.settings
        ds = run.data_source
        base_path = ""
        if run.model:
            base_path = str(self.models.resolve(run.tenant_id, run.model).base_path)
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
        """Whether the run goes on: still active, and the key that started it not revoked (else it fails)."""
        with self.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            if run is None or run.status not in ACTIVE:
                return False
            if not self.keys.key_valid(run.created_by_key):
                run.status, run.error, run.finished_at = "failed", REVOKED, now()
                return False
            return True

    def _store(self, run_id: str, items: list[dict]) -> None:
        """Add a batch's output items and totals in one transaction (dropped if the run was stopped)."""
        with self.db.session() as s:
            run = s.get(EvalRunRow, run_id, with_for_update=True)
            if run is None or run.status not in ACTIVE:
                return
            for item in items:
                s.add(
                    EvalOutputItemRow(
                        id=new_id("outputitem_"),
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
        with self.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            if run is not None and run.status in ACTIVE:
                run.status, run.error, run.finished_at = status, error, now()

    async def _record_on_manifest(self, run_id: str) -> None:
        """A job's evaluation results go into its model's manifest beside the adapter (its lineage)."""
        async with self._manifest_lock:
            await asyncio.to_thread(self._add_to_manifest, run_id)

    def _add_to_manifest(self, run_id: str) -> None:
        with self.db.session() as s:
            run = s.get(EvalRunRow, run_id)
            job = s.get(JobRow, run.job_id) if run is not None and run.job_id else None
            model = s.get(FineTunedModelRow, job.fine_tuned_model) if job and job.fine_tuned_model else None
            ev = s.get(EvalRow, run.eval_id) if run is not None else None
        if model is None or run.status in ACTIVE:
            return
        entry = {**run_result(run, model.id), "eval_name": ev.name if ev else None}
        key = model.adapter_prefix + ADAPTER_MANIFEST
        try:
            manifest = json.loads(self.store.get_bytes(key))
        except Exception:  # no manifest (an imported adapter): nothing to add to
            return
        manifest["evals"] = [e for e in manifest.get("evals", []) if e["run_id"] != run.id] + [entry]
        self.store.uncheck(model.adapter_prefix, ADAPTER_MANIFEST)  # one published before it was unchecked
        self.store.put_bytes(key, json.dumps(manifest, indent=2).encode())


def api_url_for_tasks(settings: Settings) -> str:
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
