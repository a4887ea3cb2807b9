"""Tables of evaluations: evals (criteria), their runs, and each run's output items. A run's input items
live in the object store (`evals/runs/<run_id>/items.jsonl`); its output items are rows, so that a run
resumes after a restart where it stopped and results can be paged and compared."""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.platform.db.models import Base, now


class EvalRow(Base):
    __tablename__ = "evals"
    noun = "eval"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    data_source_config: Mapped[dict] = mapped_column(JSON)
    testing_criteria: Mapped[list] = mapped_column(JSON)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    # The built-in suite it was made from (evals/suites), whose items and prompt runs may use.
    suite: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class EvalRunRow(Base):
    __tablename__ = "eval_runs"
    noun = "run"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    data_source: Mapped[dict] = mapped_column(JSON)
    items_key: Mapped[str] = mapped_column(String(1024))
    item_count: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Running totals (evals.summary), updated with each batch of output items.
    summary: Mapped[dict] = mapped_column(JSON)
    # Set when a fine-tuning job started this run on its result (or on its base model, for reference).
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    # The tenant key that started the run (None: the admin key, or a job): revoking it stops the run.
    created_by_key: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EvalOutputItemRow(Base):
    __tablename__ = "eval_output_items"
    noun = "output item"
    page_order = ("index",)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(8))
    item: Mapped[dict] = mapped_column(JSON)
    sample: Mapped[dict] = mapped_column(JSON)
    results: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
