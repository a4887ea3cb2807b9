"""Files: upload to the object store, validate by purpose, list, read, delete. Per tenant."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import select

from service.context import AppContext
from service.db import FileRow
from service.errors import ApiError
from service.protocol.files import FileObject
from trainers.data_format import DatasetError, parse_jsonl


def to_api(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename, purpose=row.purpose
    )


def validate_for_purpose(purpose: str, stream: BinaryIO) -> None:
    """Reject a file that cannot serve its purpose, naming the first bad line (400)."""
    if purpose == "fine-tune":
        stream.seek(0)
        try:
            parse_jsonl(stream)
        except DatasetError as exc:
            raise ApiError(
                400, f"Invalid fine-tuning file: {exc}", param="file", code="invalid_file"
            ) from None
        finally:
            stream.seek(0)


class FileService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def upload(self, tenant: str, filename: str, purpose: str, stream: BinaryIO) -> FileRow:
        validate_for_purpose(purpose, stream)
        file_id = "file-" + secrets.token_hex(12)
        key = f"files/{tenant}/{file_id}"
        info = self.ctx.store.put_stream(key, stream)
        if info.size == 0:
            self.ctx.store.delete(key)
            raise ApiError(400, "The file is empty.", param="file", code="empty_file")
        if info.size > self.ctx.settings.max_file_bytes:
            self.ctx.store.delete(key)
            raise_too_large(self.ctx.settings.max_file_bytes)
        row = FileRow(
            id=file_id,
            tenant_id=tenant,
            filename=filename,
            purpose=purpose,
            bytes=info.size,
            sha256=info.sha256,
            key=key,
        )
        with self.ctx.db.session() as s:
            s.add(row)
        return row

    def get(self, tenant: str, file_id: str, param: str = "file_id") -> FileRow:
        """The tenant's file, or 404 (another tenant's file does not exist for this one)."""
        with self.ctx.db.session() as s:
            row = s.get(FileRow, file_id)
        if row is None or row.tenant_id != tenant or row.deleted_at is not None:
            raise ApiError(404, f"No such File object: {file_id}", param=param, code="file_not_found")
        return row

    def list(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> list[FileRow]:
        with self.ctx.db.session() as s:
            q = select(FileRow).where(FileRow.tenant_id == tenant, FileRow.deleted_at.is_(None))
            if purpose:
                q = q.where(FileRow.purpose == purpose)
            rows = list(s.scalars(q))
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=(order == "desc"))
        if after:
            ids = [r.id for r in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        return rows[: limit + 1]

    def content(self, tenant: str, file_id: str) -> tuple[FileRow, Iterator[bytes]]:
        row = self.get(tenant, file_id)
        return row, self.ctx.store.open(row.key)

    def read_bytes(self, row: FileRow) -> bytes:
        return self.ctx.store.get_bytes(row.key, sha256=row.sha256)

    def delete(self, tenant: str, file_id: str) -> FileRow:
        from service.db.models import now

        row = self.get(tenant, file_id)
        self.ctx.store.delete(row.key)
        with self.ctx.db.session() as s:
            s.get(FileRow, file_id).deleted_at = now()
        return row


def raise_too_large(limit: int) -> None:
    raise ApiError(
        413,
        f"The file is larger than the limit of {limit} bytes (TUNESERVE_MAX_FILE_BYTES).",
        param="file",
        code="file_too_large",
    )
