"""Which models a tenant may use: the configured base models and the tenant's own fine-tuned models."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from sqlalchemy import delete, select

from evals.summary import criterion_results
from rag.embedder import default_model_path, model_name
from service.models.adapters import CONFIG_FILE as ADAPTER_CONFIG
from service.models.adapters import AdapterChecker, AdapterError, check_adapter_folder
from service.models.archives import ADAPTER_FILES, check_fits_base, pack_adapter, pack_folder
from service.models.base_models import chat_template, modalities
from service.models.sources import SourceError, allowed_folder
from service.platform.db import Database, EvalRunRow, FineTunedModelRow, JobCheckpointRow, JobRow
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.settings import Settings
from service.platform.storage import ObjectNotFound, ObjectStore, StoreError
from service.protocol.common import Model, ModelEvalRun, ModelLineage
from service.protocol.fine_tuning import ADAPTER_MANIFEST, LoraOptions
from service.protocol.tool_format import renders_tools


def adapter_prefix(fine_tuned_model: str) -> str:
    """`base:name` -> `adapters/base/name/`: the layout Ray Serve LLM loads `base:name` adapters from."""
    base, _, name = fine_tuned_model.partition(":")
    return f"adapters/{base}/{name}/"


# Writes an adapter's files into the given folder (AdapterError when it cannot).
AdapterFill = Callable[[Path], None]


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    base_model: str
    base_path: Path
    adapter_prefix: str | None = None  # None for a base model

    @property
    def is_base(self) -> bool:
        return self.adapter_prefix is None


@dataclass
class ModelRegistry:
    settings: Settings
    db: Database
    store: ObjectStore
    adapters: AdapterChecker

    @cached_property
    def bases(self) -> dict[str, Path]:
        """Base model name -> its folder, resolved once: every request looks its model up here, and
        resolving a path costs a system call per path component."""
        return self.settings.resolved_base_models

    @cached_property
    def embedder(self) -> Model:
        """The vector stores' embedder, which /v1/embeddings serves."""
        path = self.settings.embedding_model or default_model_path()
        name = model_name(self.settings.embedding_model)
        return Model(id=name, created=_created(path), owned_by="tuneserve", root=name, type="embeddings")

    def list(self, tenant: str) -> list[Model]:
        """Base models, the embedder, then the tenant's fine-tuned models."""
        bases = self.bases
        models = [
            Model(
                id=name,
                created=_created(path),
                owned_by="tuneserve",
                root=name,
                modalities=self.modalities(name),
            )
            for name, path in bases.items()
        ]
        rows, _ = self.db.page(select(FineTunedModelRow).where(FineTunedModelRow.tenant_id == tenant))
        return (
            models
            + [self.embedder]
            + [
                Model(
                    id=r.id,
                    created=r.created_at,
                    owned_by=tenant,
                    root=r.base_model,
                    parent=r.parent or r.base_model,
                    modalities=self.modalities(r.base_model),
                )
                for r in rows
            ]
        )

    def renders_tools(self, base_model: str) -> bool:
        """Whether the base model's chat template presents tools itself (else the service writes them as
        text, `service.protocol.tool_format`)."""
        path = self.bases.get(base_model)
        return path is not None and _renders_tools(str(path))

    def modalities(self, base_model: str) -> list[str]:
        """What a base model (and so every model trained from it) takes as input."""
        path = self.bases.get(base_model)
        return modalities(path) if path is not None else ["text"]

    def get(self, tenant: str, model: str) -> Model:
        """One model the tenant may use (404 otherwise), with its lineage; checkpoints too, which `list`
        leaves out."""
        if model == self.embedder.id:
            return self.embedder
        resolved = self.resolve(tenant, model)
        listed = next((m for m in self.list(tenant) if m.id == model), None)
        if listed is None:
            with self.db.session() as s:
                created = s.scalar(select(JobCheckpointRow.created_at).where(JobCheckpointRow.model == model))
            listed = Model(
                id=model,
                created=created or 0,
                owned_by=tenant,
                root=resolved.base_model,
                parent=model.rpartition(":ckpt-step-")[0],
                modalities=self.modalities(resolved.base_model),
            )
        return listed.model_copy(update={"lineage": self.lineage(tenant, resolved)})

    def lineage(self, tenant: str, model: ResolvedModel) -> ModelLineage:
        """The model's base and parent, the job and data that made it (a checkpoint's: its job's), and the
        tenant's eval runs of it."""
        with self.db.session() as s:
            job_id = parent = None
            if not model.is_base:
                row = s.get(FineTunedModelRow, model.id)
                if row is not None:
                    job_id, parent = row.job_id, row.parent
                else:  # a checkpoint
                    q = select(JobRow.id).join(JobCheckpointRow).where(JobCheckpointRow.model == model.id)
                    job_id, parent = s.scalar(q), model.id.rpartition(":ckpt-step-")[0]
            job = s.get(JobRow, job_id) if job_id else None
            runs = s.scalars(
                select(EvalRunRow)
                .where(EvalRunRow.tenant_id == tenant, EvalRunRow.model == model.id)
                .order_by(EvalRunRow.created_at.desc(), EvalRunRow.id.desc())
            ).all()
            evals = [
                ModelEvalRun(
                    eval_id=r.eval_id,
                    run_id=r.id,
                    status=r.status,
                    result_counts=r.summary["result_counts"],
                    per_testing_criteria_results=criterion_results(r.summary),
                )
                for r in runs
            ]
        spec = job.spec if job is not None else {}
        return ModelLineage(
            base_model=model.base_model,
            parent=parent,
            training_job=job_id,
            training_file=spec.get("training_file"),
            training_file_sha256=spec.get("training_sha256"),
            validation_file=spec.get("validation_file"),
            hyperparameters={**spec["hyperparameters"], "lora": spec.get("lora")} if spec else None,
            evals=evals,
        )

    def resolve(self, tenant: str, model: str, param: str = "model") -> ResolvedModel:
        """The model `tenant` asked for, or 404 (another tenant's model does not exist for this one)."""
        bases = self.bases
        if model in bases:
            return ResolvedModel(model, model, bases[model])
        with self.db.session() as s:
            row = s.get(FineTunedModelRow, model)
            if row is not None:
                found = (row.tenant_id, row.base_model, row.adapter_prefix)
            else:  # a checkpoint of a job: "<fine-tuned model>:ckpt-step-<step>"
                q = select(JobRow.tenant_id, JobRow.spec, JobCheckpointRow.key).join(JobCheckpointRow)
                checkpoint = s.execute(q.where(JobCheckpointRow.model == model)).first()
                found = (checkpoint[0], checkpoint[1]["base_model"], checkpoint[2]) if checkpoint else None
        if model == self.embedder.id:
            raise ApiError(
                400,
                f"'{model}' is the embedding model: it answers /v1/embeddings only. Give a language model "
                "(`GET /v1/models` lists them with `type` llm).",
                param=param,
                code="model_not_supported",
            )
        if found is None or found[0] != tenant or found[1] not in bases:
            raise ApiError(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                param=param,
                code="model_not_found",
            )
        _, base, adapter_prefix = found
        return ResolvedModel(model, base, bases[base], adapter_prefix)

    def lora_options(self, model: ResolvedModel) -> LoraOptions:
        """The LoRA shape of a fine-tuned model's adapter (what training continued from it keeps)."""
        try:
            config = json.loads(self.store.get_bytes(model.adapter_prefix + ADAPTER_CONFIG))
        except ObjectNotFound:
            raise ApiError(
                400,
                f"The model '{model.id}' has no adapter to continue from.",
                param="model",
                code="invalid_model",
            ) from None
        targets = config["target_modules"]
        return LoraOptions(
            r=config["r"],
            alpha=config.get("lora_alpha"),
            dropout=config.get("lora_dropout", 0.0),
            target_modules=sorted(targets) if isinstance(targets, list) else [targets],
        )

    def import_adapter(
        self, tenant: str, base_model: str, suffix: str | None, fill: AdapterFill, param: str
    ) -> Model:
        """Register a PEFT adapter as a new model of `tenant` over `base_model`: `fill` writes its files into
        a folder (from an upload or a source), then come the checks a served adapter gets and a check that
        it fits that base model; each failure a 400 naming `param`."""
        base_path = self.bases.get(base_model)
        if base_path is None:
            raise ApiError(
                404,
                f"The base model '{base_model}' does not exist here.",
                param="base_model",
                code="model_not_found",
            )
        with tempfile.TemporaryDirectory(prefix="adapter-import-") as tmp:
            folder = Path(tmp)
            try:
                fill(folder)
                check_adapter_folder(folder, self.adapters.max_rank)
                check_fits_base(folder, base_model, base_path)
            except AdapterError as exc:
                raise ApiError(
                    400, f"The adapter cannot be imported: {exc}.", param=param, code="invalid_adapter"
                ) from None
            model_id = new_id(f"{base_model}:{suffix or 'imported'}-")
            self.store.put_folder(adapter_prefix(model_id), folder, unchecked=(ADAPTER_MANIFEST,))
        with self.db.session() as s:
            s.add(
                FineTunedModelRow(
                    id=model_id,
                    tenant_id=tenant,
                    base_model=base_model,
                    adapter_prefix=adapter_prefix(model_id),
                )
            )
        return self.get(tenant, model_id)

    def source(self, uri: str) -> AdapterFill:
        """What fills an import's folder from the S3 folder `uri`, if the admin allows it (else a 400): the
        adapter's two files, read by name, each at most TUNESERVE_MAX_FILE_BYTES."""
        try:
            folder = allowed_folder(uri, self.settings.adapter_import_sources, self.store.bucket)
        except SourceError as exc:
            raise ApiError(400, f"{exc}.", param="source", code="source_not_allowed") from None
        bucket = self.store.bucket_store(folder.bucket)
        max_bytes = self.settings.max_file_bytes

        def fill(dest: Path) -> None:
            for name in ADAPTER_FILES:
                key = folder.prefix + name
                try:
                    if bucket.head(key).size > max_bytes:
                        raise AdapterError(f"{folder}{name} is larger than {max_bytes} bytes")
                    (dest / name).write_bytes(bucket.get_bytes(key))
                except ObjectNotFound:
                    raise AdapterError(
                        f"{folder} has no {name} (a PEFT adapter folder holds {' and '.join(ADAPTER_FILES)})"
                    ) from None
                except StoreError as exc:
                    raise AdapterError(f"{folder}{name} cannot be read: {exc}") from None

        return fill

    def export_adapter(self, tenant: str, model: str) -> bytes:
        """The model's adapter as a .tar.gz of its PEFT folder (and manifest, for a fine-tuned one)."""
        resolved = self._adapter_model(tenant, model)
        with tempfile.TemporaryDirectory(prefix="adapter-export-") as tmp:
            folder = self.store.get_folder(resolved.adapter_prefix, tmp)
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            return pack_adapter(folder, files)

    def export_merged(self, tenant: str, model: str, dtype: str, dest: Path) -> Path:
        """The model's adapter folded into its base, as a .tar of a Hugging Face folder written into `dest`
        (weights in `dtype`: "auto" keeps the base's precision)."""
        from service.models.merge import merge_adapter

        resolved = self._adapter_model(tenant, model)
        adapter = self.store.get_folder(resolved.adapter_prefix, dest / "adapter")
        vision = "image" in self.modalities(resolved.base_model)
        merged = merge_adapter(resolved.base_path, adapter, dest / "merged", dtype, vision)
        return pack_folder(merged, dest / "merged.tar")

    def _adapter_model(self, tenant: str, model: str) -> ResolvedModel:
        resolved = self.resolve(tenant, model)
        if resolved.is_base:
            raise ApiError(
                400, f"'{model}' is a base model: it has no adapter.", param="model", code="invalid_model"
            )
        return resolved

    def delete(self, tenant: str, model: str) -> ResolvedModel:
        """Delete a fine-tuned model (or a job's checkpoint) the tenant owns: its registry entry, then its
        adapter's objects."""
        resolved = self.resolve(tenant, model)
        if resolved.is_base:
            raise ApiError(
                400,
                f"'{model}' is a base model; only fine-tuned models can be deleted.",
                param="model",
                code="invalid_model",
            )
        with self.db.session() as s:
            s.execute(delete(FineTunedModelRow).where(FineTunedModelRow.id == model))
            s.execute(delete(JobCheckpointRow).where(JobCheckpointRow.model == model))
        self.store.delete_prefix(resolved.adapter_prefix)
        self.adapters.forget(model)
        return resolved


@lru_cache(maxsize=32)
def _renders_tools(path: str) -> bool:
    return renders_tools(chat_template(Path(path)))


def _created(path: Path) -> int:
    """A model folder's time, as `created`."""
    return int(path.stat().st_mtime) if path.exists() else 0
