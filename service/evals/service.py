"""Evals and their runs: OpenAI's Evals API over `evals` (graders, runner, suites). Everything a run needs is
checked here, before it is queued (a precise 4xx naming the item, line or field); running is
`service.evals.runs`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

from pydantic import ValidationError
from sqlalchemy import func, select

from evals import suites, user_patterns
from evals.graders import GRADER_TYPES, GRADERS, template_problems
from evals.summary import changed_items, criterion_results, empty_summary, pass_rate
from service.evals.inputs import (
    STORED_ITEM_SCHEMA,
    check_input_messages,
    check_items,
    item_fields,
    read_rows,
    sampling_params,
)
from service.files.service import FileService
from service.inference.chat import ChatService
from service.inference.stored_completions import StoredChat, StoredCompletions
from service.models.registry import ModelRegistry
from service.platform.db import Database, EvalOutputItemRow, EvalRow, EvalRunRow
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.quotas import LimitPolicy, check_quota
from service.platform.settings import Settings
from service.platform.storage import ObjectStore
from service.protocol.evals import (
    ChangedItem,
    Comparison,
    CompletionsDataSource,
    CriterionComparison,
    Eval,
    EvalCreate,
    EvalUpdate,
    ModelUsage,
    OutputItem,
    Progress,
    ResultCounts,
    Run,
    RunCreate,
    RunError,
    RunSummary,
    StoredCompletionsSource,
)
from service.vector_stores.service import VectorStores

SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "output_text": {"type": "string"},
        "output_json": {},
        "citations": {"type": "array"},
    },
    "required": ["model", "choices"],
}
ACTIVE = ("queued", "in_progress")


def items_key(run_id: str) -> str:
    return f"evals/runs/{run_id}/items.jsonl"


@dataclass
class EvalService:
    settings: Settings
    db: Database
    store: ObjectStore
    files: FileService
    models: ModelRegistry
    chat: ChatService
    vector_stores: VectorStores
    limits: LimitPolicy
    stored_completions: StoredCompletions | None = None  # the items of evals of stored chats

    # Evals -----------------------------------------------------------------------------------------
    def create(self, tenant: str, req: EvalCreate) -> EvalRow:
        suite = self._suite(req.suite) if req.suite else None
        config = req.data_source_config.model_dump() if req.data_source_config else suite.data_source_config
        if config["type"] == "stored_completions":
            config |= {"item_schema": STORED_ITEM_SCHEMA, "include_sample_schema": True}
        criteria = req.testing_criteria or suite.testing_criteria
        _check_schema(config["item_schema"])
        self.check_criteria(tenant, criteria, config["item_schema"])
        row = EvalRow(
            id=new_id("eval_"),
            tenant_id=tenant,
            name=req.name or (suite.name if suite else "eval"),
            data_source_config=config,
            testing_criteria=criteria,
            metadata_=req.metadata,
            suite=suite.name if suite else None,
        )
        with self.db.session() as s:
            s.add(row)
        return row

    def check_criteria(self, tenant: str, criteria: list[dict], item_schema: dict) -> list:
        try:
            graders = GRADERS.validate_python(criteria)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = list(first["loc"])
            # Pydantic puts the union member's tag in the path: testing_criteria[0].string_check.operation
            path = f"testing_criteria[{loc[0]}]" + "".join(f".{p}" for p in loc[2:] if isinstance(p, str))
            msg = first["msg"].removeprefix("Value error, ")
            if first["type"] == "union_tag_invalid":
                msg = f"unknown grader type; use one of {', '.join(GRADER_TYPES)}"
                path = f"testing_criteria[{loc[0]}].type"
            raise ApiError(400, f"{path}: {msg}", param=path, code="invalid_testing_criteria") from None
        names = [g.name for g in graders]
        for i, g in enumerate(graders):
            if names.count(g.name) > 1:
                raise ApiError(
                    400,
                    f"testing_criteria[{i}].name: '{g.name}' is used twice; names identify results",
                    param=f"testing_criteria[{i}].name",
                    code="invalid_testing_criteria",
                )
            problems = template_problems(g, item_fields(item_schema))
            if problems:
                raise ApiError(
                    400,
                    f"testing_criteria[{i}]: {problems[0]}",
                    param=f"testing_criteria[{i}]",
                    code="invalid_testing_criteria",
                )
            if hasattr(g, "model"):
                self.models.resolve(tenant, g.model, param=f"testing_criteria[{i}].model")
            if g.type == "pairwise":  # the models it asks are the tenant's too
                self.models.resolve(tenant, g.baseline_model, param=f"testing_criteria[{i}].baseline_model")
                if g.judge is not None:
                    self.models.resolve(tenant, g.judge.model, param=f"testing_criteria[{i}].judge.model")
        return graders

    def get(self, tenant: str, eval_id: str) -> EvalRow:
        return self.db.get_or_404(EvalRow, eval_id, "eval_id", tenant_id=tenant)

    def list(self, tenant: str, after: str | None, limit: int, order: str) -> tuple[list[EvalRow], bool]:
        q = select(EvalRow).where(EvalRow.tenant_id == tenant)
        return self.db.page(q, after, limit, order == "desc")

    def update(self, tenant: str, eval_id: str, req: EvalUpdate) -> EvalRow:
        self.get(tenant, eval_id)
        with self.db.session() as s:
            row = s.get(EvalRow, eval_id)
            for field in req.model_fields_set:
                setattr(row, "metadata_" if field == "metadata" else field, getattr(req, field))
        return self.get(tenant, eval_id)

    def delete(self, tenant: str, eval_id: str) -> None:
        self.get(tenant, eval_id)
        for run in self.runs(tenant, eval_id)[0]:
            self.delete_run(tenant, eval_id, run.id)
        with self.db.session() as s:
            s.delete(s.get(EvalRow, eval_id))

    def to_api(self, row: EvalRow) -> Eval:
        config = row.data_source_config
        schema = {"type": "object", "properties": {"item": config["item_schema"]}, "required": ["item"]}
        if config.get("include_sample_schema"):
            schema["properties"]["sample"] = SAMPLE_SCHEMA
            schema["required"].append("sample")
        return Eval(
            id=row.id,
            name=row.name,
            data_source_config={"type": config["type"], "schema": schema}
            | ({"metadata": config.get("metadata")} if config["type"] == "stored_completions" else {}),
            testing_criteria=row.testing_criteria,
            created_at=row.created_at,
            metadata=row.metadata_,
            suite=row.suite,
        )

    # Runs ------------------------------------------------------------------------------------------
    def create_run(
        self,
        tenant: str,
        eval_id: str,
        req: RunCreate,
        job_id: str | None = None,
        created_by_key: str | None = None,
    ) -> EvalRunRow:
        ev = self.get(tenant, eval_id)
        ds = req.data_source
        suite = suites.load(ev.suite) if ev.suite else None
        graders = self.check_criteria(tenant, ev.testing_criteria, ev.data_source_config["item_schema"])
        needs_sample = any(g.needs_sample for g in graders)
        needs_model = ds.type == "completions" or any(not g.needs_sample for g in graders)
        if needs_model and not ds.model:
            raise ApiError(
                400, "data_source.model: this eval's graders need a model.", param="data_source.model"
            )
        if ds.model:
            self.chat.servable(tenant, ds.model, param="data_source.model")
        if job_id is None:  # a job's own runs are part of the job, which has its own limit
            with self.db.session() as s:
                q = select(func.count()).where(EvalRunRow.tenant_id == tenant, EvalRunRow.status.in_(ACTIVE))
                active = s.scalar(q) or 0
            limit = self.limits(tenant).active_eval_runs
            check_quota(
                "evaluation runs queued or running",
                active,
                1,
                limit,
                "TUNESERVE_MAX_ACTIVE_EVAL_RUNS_PER_TENANT",
                30,
            )
        rows = read_rows(self.files, tenant, ds, suite, partial(self._stored_chats, tenant))
        check_items(rows, ev.data_source_config["item_schema"], ds)
        data_source = ds.model_dump(mode="json", exclude_none=True)
        if isinstance(ds, CompletionsDataSource):
            messages = (
                ds.input_messages.model_dump() if ds.input_messages else (suite and suite.input_messages)
            )
            if needs_sample and messages is None:
                raise ApiError(
                    400,
                    "data_source.input_messages is required: the graders grade the model's answers.",
                    param="data_source.input_messages",
                )
            if messages is not None:
                check_input_messages(messages, ev.data_source_config["item_schema"])
                data_source["input_messages"] = messages
            data_source["sampling_params"] = sampling_params(
                {**(suite.sampling_params if suite else {}), **(ds.sampling_params or {})}
            )
            if ds.retrieval is not None:
                for store_id in ds.retrieval.vector_store_ids:
                    self.vector_stores.get(tenant, store_id)
        run_id = new_id("evalrun_")
        self.store.put_bytes(items_key(run_id), "".join(json.dumps(r) + "\n" for r in rows).encode())
        row = EvalRunRow(
            id=run_id,
            eval_id=eval_id,
            tenant_id=tenant,
            name=req.name or f"{ev.name} on {ds.model or 'provided samples'}",
            model=ds.model or "",
            status="queued",
            data_source=data_source,
            items_key=items_key(run_id),
            item_count=len(rows),
            metadata_=req.metadata,
            summary=empty_summary([g.name for g in graders]),
            job_id=job_id,
            created_by_key=created_by_key,
        )
        with self.db.session() as s:
            s.add(row)
        return row

    def _stored_chats(self, tenant: str, source: StoredCompletionsSource) -> list[StoredChat]:
        if self.stored_completions is None:
            raise ApiError(400, "Stored chat completions are not kept here.", param="data_source.source")
        return list(self.stored_completions.matching(tenant, source))

    def get_run(self, tenant: str, eval_id: str, run_id: str) -> EvalRunRow:
        self.get(tenant, eval_id)
        return self.db.get_or_404(EvalRunRow, run_id, "run_id", eval_id=eval_id)

    def runs(
        self,
        tenant: str,
        eval_id: str,
        status: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        order: str = "asc",
    ) -> tuple[list[EvalRunRow], bool]:
        self.get(tenant, eval_id)
        q = select(EvalRunRow).where(EvalRunRow.eval_id == eval_id)
        if status:
            q = q.where(EvalRunRow.status == status)
        return self.db.page(q, after, limit, order == "desc")

    def job_runs(self, job_id: str) -> list[EvalRunRow]:
        return self.db.page(select(EvalRunRow).where(EvalRunRow.job_id == job_id))[0]

    def job_results(self, job_id: str, fine_tuned_model: str | None) -> list[dict]:
        """The evaluation runs a job asked for, each with its results (on the job and its manifest)."""
        return [run_result(r, fine_tuned_model) for r in self.job_runs(job_id)]

    def check_job_evals(self, tenant: str, base_model: str, requested: list) -> None:
        """A job's `evals`, checked when the job is created: each eval exists and can run on the job."""
        for i, req in enumerate(requested):
            try:
                ev = self.get(tenant, req.eval_id)
            except ApiError as exc:
                raise ApiError(404, exc.message, param=f"evals[{i}].eval_id", code="not_found") from None
            source = {"type": "completions", **(req.data_source or {}), "model": base_model}
            try:
                ds = CompletionsDataSource(**source)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ApiError(
                    400, f"evals[{i}].data_source.{where}: {first['msg']}", param=f"evals[{i}].data_source"
                ) from None
            if ds.source is None and ev.suite is None:
                raise ApiError(
                    400,
                    f"evals[{i}].data_source.source is required: eval {ev.id} is not made from a suite.",
                    param=f"evals[{i}].data_source",
                )

    def cancel_run(self, tenant: str, eval_id: str, run_id: str) -> EvalRunRow:
        row = self.get_run(tenant, eval_id, run_id)
        with self.db.session() as s:
            current = s.get(EvalRunRow, run_id)
            if current.status not in ACTIVE:
                raise ApiError(
                    409,
                    f"Run {run_id} is already {current.status} and cannot be canceled.",
                    param="run_id",
                    code="run_not_cancellable",
                )
            current.status = "canceled"
        return self.get_run(tenant, eval_id, row.id)

    def cancel_all_runs(self, tenant: str) -> int:
        """Cancel every queued or running run of `tenant` (the tenant is being disabled); their runners
        stop at their next batch."""
        with self.db.session() as s:
            runs = list(
                s.scalars(
                    select(EvalRunRow).where(EvalRunRow.tenant_id == tenant, EvalRunRow.status.in_(ACTIVE))
                )
            )
            for run in runs:
                run.status = "canceled"
        return len(runs)

    def delete_run(self, tenant: str, eval_id: str, run_id: str) -> None:
        row = self.get_run(tenant, eval_id, run_id)
        with self.db.session() as s:
            for item in s.scalars(select(EvalOutputItemRow).where(EvalOutputItemRow.run_id == run_id)):
                s.delete(item)
            current = s.get(EvalRunRow, run_id)
            if current.status in ACTIVE:
                current.status = "canceled"  # the runner stops at its next batch and finds the run gone
            s.delete(current)
        self.store.delete(row.items_key)

    def output_items(
        self,
        tenant: str,
        eval_id: str,
        run_id: str,
        status: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        order: str = "asc",
    ) -> tuple[list[EvalOutputItemRow], bool]:
        self.get_run(tenant, eval_id, run_id)
        q = select(EvalOutputItemRow).where(EvalOutputItemRow.run_id == run_id)
        if status:
            q = q.where(EvalOutputItemRow.status == status)
        return self.db.page(q, after, limit, order == "desc")

    def output_item(self, tenant: str, eval_id: str, run_id: str, item_id: str) -> EvalOutputItemRow:
        self.get_run(tenant, eval_id, run_id)
        return self.db.get_or_404(EvalOutputItemRow, item_id, "output_item_id", run_id=run_id)

    def run_to_api(self, row: EvalRunRow) -> Run:
        summary = row.summary
        return Run(
            id=row.id,
            eval_id=row.eval_id,
            name=row.name,
            model=row.model,
            status=row.status,
            created_at=row.created_at,
            data_source=row.data_source,
            result_counts=ResultCounts(**summary["result_counts"]),
            per_testing_criteria_results=criterion_results(summary),
            per_model_usage=[
                ModelUsage(model_name=m, cached_tokens=0, **u) for m, u in summary["usage"].items()
            ],
            report_url=f"{self.settings.base_url}/v1/evals/{row.eval_id}/runs/{row.id}/output_items",
            error=RunError(**row.error) if row.error else None,
            metadata=row.metadata_,
            progress=Progress(completed=summary["result_counts"]["total"], total=row.item_count),
            fine_tuning_job_id=row.job_id,
        )

    def compare(self, tenant: str, eval_id: str, run_ids: list[str]) -> Comparison:
        """Runs side by side: per criterion, and the items whose status is not the same in all."""
        if len(run_ids) < 2:
            raise ApiError(400, "Compare needs at least two run_ids.", param="run_ids")
        runs = [self.get_run(tenant, eval_id, r) for r in run_ids]
        items = [{i.index: i for i in self.output_items(tenant, eval_id, r.id)[0]} for r in runs]
        names = list(dict.fromkeys(n for r in runs for n in r.summary["criteria"]))
        criteria = [
            CriterionComparison(
                testing_criteria=name,
                pass_rate=[pass_rate(c) if (c := r.summary["criteria"].get(name)) else None for r in runs],
                mean_score=[
                    c["score_sum"] / c["scored"]
                    if (c := r.summary["criteria"].get(name)) and c["scored"]
                    else None
                    for r in runs
                ],
            )
            for name in names
        ]
        statuses = [{i: {"status": row.status} for i, row in run_items.items()} for run_items in items]
        changed = [
            ChangedItem(
                datasource_item_id=i,
                datasource_item=next(run_items[i].item for run_items in items if i in run_items),
                status=[run_items[i].status if i in run_items else None for run_items in items],
                output_text=[
                    run_items[i].sample.get("output_text") if i in run_items else None for run_items in items
                ],
            )
            for i in changed_items(statuses)
        ]
        summaries = [
            RunSummary(
                id=r.id,
                model=r.model,
                status=r.status,
                result_counts=ResultCounts(**r.summary["result_counts"]),
                per_testing_criteria_results=criterion_results(r.summary),
            )
            for r in runs
        ]
        return Comparison(eval_id=eval_id, runs=summaries, criteria=criteria, changed_items=changed)

    @staticmethod
    def item_to_api(row: EvalOutputItemRow, eval_id: str) -> OutputItem:
        return OutputItem(
            id=row.id,
            run_id=row.run_id,
            eval_id=eval_id,
            created_at=row.created_at,
            status=row.status,
            datasource_item_id=row.index,
            datasource_item=row.item,
            results=row.results,
            sample=row.sample,
        )

    @staticmethod
    def _suite(name: str) -> suites.Suite:
        suite = suites.load(name)
        if suite is None:
            raise ApiError(
                404,
                f"No built-in suite '{name}'; there are {', '.join(suites.names())}.",
                param="suite",
                code="not_found",
            )
        return suite


def run_result(run: EvalRunRow, fine_tuned_model: str | None) -> dict:
    """A run's results in brief, as a fine-tuning job and a model's manifest record them."""
    return {
        "eval_id": run.eval_id,
        "run_id": run.id,
        "model": run.model,
        "role": "fine_tuned" if run.model == fine_tuned_model else "base",
        "status": run.status,
        "result_counts": run.summary["result_counts"],
        "per_testing_criteria_results": criterion_results(run.summary),
    }


def _check_schema(schema: dict) -> None:
    import jsonschema

    try:
        user_patterns.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ApiError(
            400,
            f"data_source_config.item_schema is not a valid JSON schema: {exc.message}",
            param="data_source_config.item_schema",
        ) from None
    except user_patterns.PatternError as exc:
        raise ApiError(
            400, f"data_source_config.item_schema: {exc}", param="data_source_config.item_schema"
        ) from None
