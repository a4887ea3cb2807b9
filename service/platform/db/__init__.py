"""Database: SQLAlchemy 2 models and sessions. SQLite by default, Postgres by URL, same code."""

from service.platform.db.batch_models import BatchRow
from service.platform.db.completion_models import ChatCompletionRow
from service.platform.db.eval_models import EvalOutputItemRow, EvalRow, EvalRunRow
from service.platform.db.models import (
    ApiKeyRow,
    Base,
    FileRow,
    FineTunedModelRow,
    JobCheckpointRow,
    JobEventRow,
    JobRow,
    Tenant,
)
from service.platform.db.response_models import ResponseRow
from service.platform.db.session import Database, DatabaseError
from service.platform.db.vector_store_models import FileBatchRow, VectorStoreFileRow, VectorStoreRow

__all__ = [
    "ApiKeyRow",
    "Base",
    "BatchRow",
    "ChatCompletionRow",
    "Database",
    "DatabaseError",
    "EvalOutputItemRow",
    "EvalRow",
    "EvalRunRow",
    "FileBatchRow",
    "FileRow",
    "FineTunedModelRow",
    "JobCheckpointRow",
    "JobEventRow",
    "JobRow",
    "ResponseRow",
    "Tenant",
    "VectorStoreFileRow",
    "VectorStoreRow",
]
