"""/v1/batches: a tenant's batches, created from a `batch` file whose every line is checked first (a 400
naming the line), listed, retrieved and cancelled; `service.batches.runner` answers them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import func, select

from service.batches.lines import BatchFileError, count_requests
from service.batches.runner import BatchRunner, local_copy
from service.files.service import FileService
from service.platform.db import BatchRow, Database
from service.platform.db.models import now
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.quotas import LimitPolicy, check_quota
from service.protocol.batches import (
    ACTIVE_BATCH,
    BATCH_PURPOSE,
    BatchCreate,
    BatchErrors,
    BatchObject,
    BatchRequestCounts,
    BatchUsage,
)

WINDOWS_S = {"24h": 24 * 3600}


def validate_batch_file(stream: BinaryIO) -> None:
    """The upload check of purpose `batch`: every line is a request a batch can run (400 naming it)."""
    try:
        count_requests(stream)
    except BatchFileError as exc:
        raise ApiError(400, f"Invalid batch file: {exc}", param="file", code="invalid_file") from None


def inputs_in_use(db: Database) -> set[str]:
    """The input files' objects of unfinished batches: kept if the file is deleted meanwhile."""
    with db.session() as s:
        return set(s.scalars(select(BatchRow.input_key).where(BatchRow.status.in_(ACTIVE_BATCH))))


@dataclass
class BatchService:
    db: Database
    files: FileService
    runner: BatchRunner
    limits: LimitPolicy

    def create(self, tenant: str, key_id: str | None, req: BatchCreate) -> BatchRow:
        """Blocking (reads the input file): call it off the event loop."""
        with self.db.session() as s:
            q = select(func.count()).where(BatchRow.tenant_id == tenant, BatchRow.status.in_(ACTIVE_BATCH))
            active = s.scalar(q) or 0
        limit = self.limits(tenant).active_batches
        check_quota("unfinished batches", active, 1, limit, "TUNESERVE_MAX_ACTIVE_BATCHES_PER_TENANT", 60)
        file = self.files.get(tenant, req.input_file_id, "input_file_id", purpose=BATCH_PURPOSE)
        try:
            with local_copy(self.files.store, file.key) as copy:
                total = count_requests(copy, req.endpoint)
        except BatchFileError as exc:
            raise ApiError(
                400, f"Invalid batch file {file.id}: {exc}", param="input_file_id", code="invalid_file"
            ) from None
        created = now()
        row = BatchRow(
            id=new_id("batch_"),
            tenant_id=tenant,
            created_by_key=key_id,
            endpoint=req.endpoint,
            input_file_id=file.id,
            input_key=file.key,
            completion_window=req.completion_window,
            status="validating",
            metadata_=req.metadata,
            request_counts=BatchRequestCounts(total=total).model_dump(),
            usage=BatchUsage().model_dump(),
            created_at=created,
            expires_at=created + WINDOWS_S[req.completion_window],
        )
        with self.db.session() as s:
            s.add(row)
        self.runner.start(row.id)
        return row

    def get(self, tenant: str, batch_id: str) -> BatchRow:
        return self.db.get_or_404(BatchRow, batch_id, "batch_id", tenant_id=tenant)

    def list(self, tenant: str, after: str | None, limit: int) -> tuple[list[BatchRow], bool]:
        return self.db.page(select(BatchRow).where(BatchRow.tenant_id == tenant), after, limit, True)

    def cancel(self, tenant: str, batch_id: str) -> BatchRow:
        """A running batch stops before its next requests start, keeping what it answered (`cancelling`, then
        `cancelled`); a finished one is a 409."""
        self.get(tenant, batch_id)
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id, with_for_update=True)
            if row.status in ("validating", "in_progress"):
                row.status, row.cancelling_at = "cancelling", now()
            elif row.status not in ACTIVE_BATCH:
                raise ApiError(
                    409,
                    f"Batch {batch_id} is already {row.status}.",
                    param="batch_id",
                    code="batch_not_active",
                )
        self.runner.start(batch_id)  # a batch that was waiting to start finishes now
        return row

    @staticmethod
    def to_api(row: BatchRow) -> BatchObject:
        return BatchObject(
            id=row.id,
            endpoint=row.endpoint,
            errors=BatchErrors(data=row.errors) if row.errors else None,
            input_file_id=row.input_file_id,
            completion_window=row.completion_window,
            status=row.status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            created_at=row.created_at,
            in_progress_at=row.in_progress_at,
            expires_at=row.expires_at,
            finalizing_at=row.finalizing_at,
            completed_at=row.completed_at,
            failed_at=row.failed_at,
            expired_at=row.expired_at,
            cancelling_at=row.cancelling_at,
            cancelled_at=row.cancelled_at,
            request_counts=BatchRequestCounts(**row.request_counts),
            usage=BatchUsage(**row.usage),
            metadata=row.metadata_,
        )
