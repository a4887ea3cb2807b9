from pathlib import Path

import pytest
from sqlalchemy import text

from service.platform.db import session as db_session
from service.platform.db.session import Database, DatabaseError


def test_migrate_creates_schema_and_uses_wal(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    assert db.migrate() == db_session.SCHEMA_VERSION
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert {"tenants", "api_keys", "schema_version"} <= tables
    assert db.migrate() == db_session.SCHEMA_VERSION  # idempotent


def test_newer_database_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE schema_version SET version = 999"))
    with pytest.raises(DatabaseError, match="newer than this tuneserve"):
        db.migrate()


def test_older_database_runs_the_migrations_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    ran = []
    monkeypatch.setattr(db_session, "SCHEMA_VERSION", db_session.SCHEMA_VERSION + 2)
    monkeypatch.setattr(
        db_session,
        "MIGRATIONS",
        {
            db_session.SCHEMA_VERSION - 1: lambda conn: ran.append("a"),
            db_session.SCHEMA_VERSION: lambda conn: ran.append("b"),
        },
    )
    assert db.migrate() == db_session.SCHEMA_VERSION
    assert ran == ["a", "b"]
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == db_session.SCHEMA_VERSION


def test_unreachable_database_is_a_clear_error() -> None:
    db = Database("sqlite:////nonexistent-dir/x/y.db")
    with pytest.raises(DatabaseError, match="unusable"):
        db.migrate()


def test_a_version_1_database_gains_the_result_files_column(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.engine.begin() as conn:  # make it look like a database from schema version 1
        conn.execute(text("ALTER TABLE fine_tuning_jobs DROP COLUMN result_files"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    assert db.migrate() == 2
    with db.engine.connect() as conn:
        columns = {r[1] for r in conn.execute(text("PRAGMA table_info(fine_tuning_jobs)"))}
    assert "result_files" in columns
