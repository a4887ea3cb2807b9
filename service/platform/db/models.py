"""Tables. Later features add theirs here (or in a sibling module imported by this package)."""

from __future__ import annotations

import time
from typing import ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def now() -> int:
    return int(time.time())


class Base(DeclarativeBase):
    # What a 404 calls a missing row ("No {noun} with id '...'"), and its error code.
    noun: ClassVar[str] = "object"
    not_found_code: ClassVar[str] = "not_found"
    # How `Database.page` orders the rows (the last column unique) and which column a cursor names.
    page_order: ClassVar[tuple[str, ...]] = ("created_at", "id")
    page_cursor: ClassVar[str] = "id"


class SchemaVersion(Base):
    """One row: the schema version this database was last migrated to."""

    __tablename__ = "schema_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int] = mapped_column(Integer)


class Tenant(Base):
    """An owner of resources. Every file, job, model and store belongs to exactly one tenant."""

    __tablename__ = "tenants"
    noun = "tenant"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    # Set by the admin: the tenant's keys are refused and its work was stopped.
    disabled_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The admin's overrides of the default limits (platform.quotas.Limits field -> value), or None.
    limits: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    keys: Mapped[list[ApiKeyRow]] = relationship(back_populates="tenant")


class ApiKeyRow(Base):
    """A tenant's API key. Only a SHA-256 of the key is stored: keys are 32 random bytes, so a fast
    hash is enough (no dictionary to attack) and lets us look a key up by its hash."""

    __tablename__ = "api_keys"
    noun = "API key"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    revoked_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tenant: Mapped[Tenant] = relationship(back_populates="keys")


class FileRow(Base):
    """An uploaded file; its bytes live in the object store under `key`."""

    __tablename__ = "files"
    noun = "file"
    not_found_code = "file_not_found"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    deleted_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobRow(Base):
    """A fine-tuning job. `spec` is the resolved TrainingSpec (JSON), handed unchanged to Ray."""

    __tablename__ = "fine_tuning_jobs"
    noun = "fine-tuning job"
    not_found_code = "job_not_found"
    # Jobs run first come, first served: `created_at` is whole seconds (OpenAI's shape), so two jobs of one
    # second would otherwise be ordered by their random ids.
    page_order = ("created_at", "created_ns", "id")
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(256))
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request: Mapped[dict] = mapped_column(JSON)
    spec: Mapped[dict] = mapped_column(JSON)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # tuneserve asked Ray to stop the run `submission_id` (a pause): its end is not a failure, and the job,
    # once resumed, is submitted again as soon as that run has stopped.
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result_files: Mapped[list | None] = mapped_column(JSON, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # runs since the job was created or resumed
    runs: Mapped[int] = mapped_column(Integer, default=0)  # runs ever submitted: names the next one
    created_at: Mapped[int] = mapped_column(Integer, default=now, index=True)
    created_ns: Mapped[int] = mapped_column(BigInteger, default=time.time_ns)
    started_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobEventRow(Base):
    __tablename__ = "fine_tuning_job_events"
    noun = "event"
    page_order = ("seq",)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(String(4096))
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class JobCheckpointRow(Base):
    __tablename__ = "fine_tuning_job_checkpoints"
    noun = "checkpoint"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    # The checkpoint as a model: "<fine-tuned model>:ckpt-step-<step>", accepted wherever a model is.
    model: Mapped[str | None] = mapped_column(String(300), nullable=True, index=True)
    key: Mapped[str] = mapped_column(String(1024))
    metrics: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class FineTunedModelRow(Base):
    """A model a job produced: a LoRA adapter over `base_model`, stored under `adapter_prefix`."""

    __tablename__ = "fine_tuned_models"
    noun = "fine-tuned model"
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    adapter_prefix: Mapped[str] = mapped_column(String(1024))
    # The fine-tuned model it was trained from (None: from its base model): lineage is a chain.
    parent: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
