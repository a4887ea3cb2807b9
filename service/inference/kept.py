"""What stored responses and stored chat completions share: their size as stored JSON, a tenant's total
(counted in its storage limit with its files), and their expiry."""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, func, select

from service.platform.db import Database


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
