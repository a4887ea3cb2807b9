"""Query filters that several tables share."""

from __future__ import annotations

from sqlalchemy import Select, Text, cast, or_
from sqlalchemy.orm import InstrumentedAttribute

from service.protocol.common import MetadataFilter


def where_metadata(query: Select, column: InstrumentedAttribute, wanted: MetadataFilter | None) -> Select:
    """`query` narrowed to the rows whose `metadata` JSON column matches OpenAI's list filter: every
    `metadata[KEY]=VALUE` pair (SQLite's json_extract, Postgres' ->>), or none at all for `metadata=null`."""
    if wanted is None:
        return query
    if wanted.absent:
        # a row made without metadata holds JSON null (the column type's way to store None) or {}
        query = query.where(or_(column.is_(None), cast(column, Text).in_(["null", "{}"])))
    for key, value in wanted.equals.items():
        query = query.where(column[key].as_string() == value)
    return query
