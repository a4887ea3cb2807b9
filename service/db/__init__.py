"""Database: SQLAlchemy 2 models and sessions. SQLite by default, Postgres by URL, same code."""

from service.db.models import ApiKeyRow, Base, Tenant
from service.db.session import Database, DatabaseError

__all__ = ["ApiKeyRow", "Base", "Database", "DatabaseError", "Tenant"]
