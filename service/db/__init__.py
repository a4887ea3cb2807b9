"""Database: SQLAlchemy 2 models and sessions. SQLite by default, Postgres by URL, same code."""

from service.db.models import (
    ApiKeyRow,
    Base,
    FileRow,
    FineTunedModelRow,
    JobCheckpointRow,
    JobEventRow,
    JobRow,
    Tenant,
)
from service.db.session import Database, DatabaseError

__all__ = [
    "ApiKeyRow",
    "Base",
    "Database",
    "DatabaseError",
    "FileRow",
    "FineTunedModelRow",
    "JobCheckpointRow",
    "JobEventRow",
    "JobRow",
    "Tenant",
]
