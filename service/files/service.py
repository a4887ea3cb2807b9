"""Files: upload to the object store, validate by purpose, list, read, delete. Per tenant."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from sqlalchemy import func, select

from service.platform.db import Database, FileRow
from service.platform.db.models import now
from service.platform.errors import ApiError
from service.platform.ids import new_id
from service.platform.images import MAX_IMAGE_BYTES, ImageError, check_image
from service.platform.quotas import LimitPolicy, check_quota
from service.platform.storage import ObjectInfo, ObjectStore
from service.protocol.files import FileObject

# purpose -> check of an upload's content; raises ApiError (a 400 naming the bad line). Features that own a
# purpose register theirs in the composition root (fine-tuning: `fine-tune`).
Validator = Callable[[BinaryIO], None]
FILES_PREFIX = "files/"


@dataclass
class FileService:
    """Uploads up to `max_bytes` each (0: this instance only writes files of the service's own, `create`),
    and up to each tenant's `storage_bytes` limit in all (`limits`; none without it), which also counts what
    the tenant keeps elsewhere (`kept_elsewhere`: its stored responses and chat completions)."""

    db: Database
    store: ObjectStore
    max_bytes: int = 0
    validators: dict[str, Validator] = field(default_factory=dict)
    limits: LimitPolicy | None = None
    # The object keys that unfinished work still reads (fine-tuning: its queued, running and paused jobs'
    # data and images), registered in the composition root: a deleted file's object stays while it is read.
    in_use: Callable[[], set[str]] = field(default=set)
    # The bytes a tenant keeps outside files that count toward its storage limit (stored responses and
    # chat completions).
    kept_elsewhere: Callable[[str], int] = field(default=lambda tenant: 0)

    def upload(self, tenant: str, filename: str, purpose: str, stream: BinaryIO) -> FileRow:
        if purpose in self.validators:
            stream.seek(0)
            try:
                self.validators[purpose](stream)
            finally:
                stream.seek(0)
        file_id, key = _new_file(tenant)
        info = self.store.put_stream(key, stream)
        if info.size == 0:
            self.store.delete(key)
            raise ApiError(400, "The file is empty.", param="file", code="empty_file")
        if info.size > self.max_bytes:
            self.store.delete(key)
            raise too_large(self.max_bytes)
        try:
            self.check_room(tenant, info.size)
        except ApiError:
            self.store.delete(key)
            raise
        return self._add(tenant, filename, purpose, file_id, key, info)

    def check_room(self, tenant: str, adding: int) -> None:
        """The 429 of the tenant's storage limit if `adding` bytes more would pass it."""
        if self.limits is None:
            return
        used = self.stored_bytes(tenant) + self.kept_elsewhere(tenant)
        limit = self.limits(tenant).storage_bytes
        check_quota(
            "stored bytes (files and stored responses)",
            used,
            adding,
            limit,
            "TUNESERVE_MAX_STORAGE_BYTES_PER_TENANT",
        )

    def stored_bytes(self, tenant: str) -> int:
        """The bytes of the tenant's files (not deleted)."""
        with self.db.session() as s:
            q = select(func.sum(FileRow.bytes)).where(
                FileRow.tenant_id == tenant, FileRow.deleted_at.is_(None)
            )
            return int(s.scalar(q) or 0)

    def create(self, tenant: str, filename: str, purpose: str, data: bytes, content_type: str) -> FileRow:
        """A file the service itself writes for a tenant (a job's step metrics)."""
        file_id, key = _new_file(tenant)
        return self._add(
            tenant, filename, purpose, file_id, key, self.store.put_bytes(key, data, content_type)
        )

    def create_from(self, tenant: str, filename: str, purpose: str, content: BinaryIO) -> FileRow:
        """`create` for content read from a file object (one the service wrote to disk: a batch's answers)."""
        file_id, key = _new_file(tenant)
        return self._add(tenant, filename, purpose, file_id, key, self.store.put_stream(key, content))

    def made(self, tenant: str, filename: str, purpose: str) -> FileRow | None:
        """The file of this name and purpose the service already wrote for the tenant, if any: work that
        resumes after a crash finds the file it made before, instead of making it twice."""
        q = select(FileRow).where(
            FileRow.tenant_id == tenant,
            FileRow.filename == filename,
            FileRow.purpose == purpose,
            FileRow.deleted_at.is_(None),
        )
        with self.db.session() as s:
            return s.scalars(q.limit(1)).first()

    def get(self, tenant: str, file_id: str, param: str = "file_id", purpose: str | None = None) -> FileRow:
        """The tenant's file, or 404 (another tenant's file does not exist for this one); with `purpose`, a
        file of another purpose is a 400 saying which it needs."""
        row = self.db.get_or_404(FileRow, file_id, param, tenant_id=tenant, deleted_at=None)
        if purpose is not None and row.purpose != purpose:
            raise ApiError(
                400,
                f"File {file_id} has purpose '{row.purpose}'; this needs purpose '{purpose}'.",
                param=param,
                code="invalid_file_purpose",
            )
        return row

    def list(
        self, tenant: str, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[FileRow], bool]:
        q = select(FileRow).where(FileRow.tenant_id == tenant, FileRow.deleted_at.is_(None))
        if purpose:
            q = q.where(FileRow.purpose == purpose)
        return self.db.page(q, after, limit, order == "desc")

    def content(self, tenant: str, file_id: str) -> tuple[FileRow, Iterator[bytes]]:
        row = self.get(tenant, file_id)
        return row, self.store.open(row.key)

    def read_bytes(self, row: FileRow) -> bytes:
        return self.store.get_bytes(row.key, sha256=row.sha256)

    def delete(self, tenant: str, file_id: str) -> FileRow:
        """The row is marked deleted first, then the object goes: a crash between leaves an object no row
        points to (harmless), never a row whose object is gone. An object that unfinished work still reads
        (a job's training file) stays until that work ends; `sweep_orphans` removes it then. The file is
        gone for the tenant at once either way."""
        row = self.get(tenant, file_id)
        with self.db.session() as s:
            s.get(FileRow, file_id).deleted_at = now()
        if row.key not in self.in_use():
            self.store.delete(row.key)
        return row

    def sweep_orphans(self, grace_s: float = 3600) -> int:
        """Delete the objects under files/ that no file row owns and no unfinished work reads: those of
        deleted files (kept while a job read them, or a crash came between the row and the object), and
        those with no row at all, older than `grace_s` (a crash came between the upload and its row;
        younger ones may be uploads in flight). Returns how many."""
        with self.db.session() as s:
            live = set(s.scalars(select(FileRow.key).where(FileRow.deleted_at.is_(None))))
            deleted = set(s.scalars(select(FileRow.key).where(FileRow.deleted_at.is_not(None))))
        live |= self.in_use()
        cutoff = time.time() - grace_s
        orphans = [
            o.key
            for o in self.store.list(FILES_PREFIX)
            if o.key not in live and (o.key in deleted or (o.modified is not None and o.modified < cutoff))
        ]
        for key in orphans:
            self.store.delete(key)
        return len(orphans)

    @staticmethod
    def to_api(row: FileRow) -> FileObject:
        return FileObject(
            id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename, purpose=row.purpose
        )

    def _add(
        self, tenant: str, filename: str, purpose: str, file_id: str, key: str, info: ObjectInfo
    ) -> FileRow:
        row = FileRow(
            id=file_id,
            tenant_id=tenant,
            filename=filename,
            purpose=purpose,
            bytes=info.size,
            sha256=info.sha256,
            key=key,
        )
        with self.db.session() as s:
            s.add(row)
        return row


def _new_file(tenant: str) -> tuple[str, str]:
    file_id = new_id("file-")
    return file_id, f"{FILES_PREFIX}{tenant}/{file_id}"


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The file is larger than the limit of {limit} bytes (TUNESERVE_MAX_FILE_BYTES).",
        param="file",
        code="file_too_large",
    )


def validate_image_file(stream: BinaryIO) -> None:
    """The upload check of purpose `vision`: one PNG, JPEG or WEBP image that decodes, at most 10 MB."""
    data = stream.read(MAX_IMAGE_BYTES + 1)
    try:
        check_image(data)
    except ImageError as exc:
        raise ApiError(400, f"Invalid image file: {exc}", param="file", code="invalid_image") from None
