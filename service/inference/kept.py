"""What stored responses and stored chat completions share: their size as stored JSON, a tenant's total
(counted in its storage limit with its files), and their expiry."""

from __future__ import annotations

import json
import time
from typing import ClassVar

from sqlalchemy import delete, func, select

from service.files.service import FileService
from service.platform.db import Database


class KeptRecords:
    """A table of records a tenant asked the service to keep: counted toward its storage limit with its
    files, deleted once older than the retention."""

    table: ClassVar[type]  # with `tenant_id`, `bytes` and `created_at` columns

    def __init__(self, db: Database, files: FileService, retention_s: float) -> None:
        self.db = db
        self.files = files  # whose storage limit the records count toward
        self.retention_s = retention_s

    def check_room(self, tenant: str, request: dict) -> None:
        """The 429 of the tenant's storage limit if keeping what `request` asks to keep would pass it
        (checked before the answer is made)."""
        self.files.check_room(tenant, size_of(self.kept_of(request)))

    def kept_of(self, request: dict) -> object:
        """What of a request is kept (all of it unless a store says otherwise)."""
        return request

    def bytes_of(self, tenant: str) -> int:
        """What the tenant's records take."""
        return bytes_of(self.db, self.table, tenant)

    def expire(self, now: float | None = None) -> int:
        """Delete the records older than the retention; how many went."""
        return expire(self.db, self.table, self.retention_s, now)


def size_of(value: object) -> int:
    """The bytes `value` takes as stored JSON."""
    return len(json.dumps(value, ensure_ascii=False).encode())


def bytes_of(db: Database, table: type, tenant: str) -> int:
    """What the tenant's rows of `table` take (their `bytes` column, summed from its index)."""
    with db.session() as s:
        return int(s.scalar(select(func.sum(table.bytes)).where(table.tenant_id == tenant)) or 0)


def expire(db: Database, table: type, retention_s: float, now: float | None = None) -> int:
    """Delete the rows of `table` older than the retention; how many went."""
    cutoff = (time.time() if now is None else now) - retention_s
    with db.session() as s:
        return s.execute(delete(table).where(table.created_at < cutoff)).rowcount


def page_items(items: list[dict], after: str | None, limit: int, order: str) -> tuple[list[dict], bool]:
    """One page of a record's items (each with an `id`), in `order` ("asc" or "desc"), after the item
    `after` (from the start for an unknown one); with whether more follow."""
    if order == "desc":
        items = items[::-1]
    ids = [item.get("id") for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    return items[start : start + limit], start + limit < len(items)
