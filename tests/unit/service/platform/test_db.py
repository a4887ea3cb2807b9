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


def test_a_version_1_database_gains_every_later_column(tmp_path: Path) -> None:
    from service.platform.db import JobCheckpointRow, JobRow, Tenant

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.session() as s:  # a job with a checkpoint from before checkpoints were models
        s.add(Tenant(id="t"))
        s.flush()
        s.add(
            JobRow(
                id="j",
                tenant_id="t",
                status="running",
                model="m",
                request={},
                spec={"fine_tuned_model": "m:x"},
                attempts=2,
            )
        )
        s.flush()
        s.add(JobCheckpointRow(id="c", job_id="j", step=4, key="k/", metrics={}))
    with db.engine.begin() as conn:  # make it look like a database from schema version 1
        conn.execute(text("ALTER TABLE fine_tuning_jobs DROP COLUMN result_files"))
        conn.execute(text("ALTER TABLE fine_tuning_jobs DROP COLUMN created_ns"))
        conn.execute(text("DROP INDEX ix_fine_tuning_job_checkpoints_model"))
        conn.execute(text("ALTER TABLE fine_tuning_job_checkpoints DROP COLUMN model"))
        conn.execute(text("ALTER TABLE fine_tuned_models DROP COLUMN parent"))
        conn.execute(text("ALTER TABLE fine_tuning_jobs DROP COLUMN stop_requested"))
        conn.execute(text("ALTER TABLE fine_tuning_jobs DROP COLUMN runs"))
        conn.execute(text("ALTER TABLE eval_runs DROP COLUMN created_by_key"))
        conn.execute(text("ALTER TABLE tenants DROP COLUMN disabled_at"))
        conn.execute(text("ALTER TABLE tenants DROP COLUMN limits"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    assert db.migrate() == 7
    with db.engine.connect() as conn:
        jobs = {r[1] for r in conn.execute(text("PRAGMA table_info(fine_tuning_jobs)"))}
        models = {r[1] for r in conn.execute(text("PRAGMA table_info(fine_tuned_models)"))}
        checkpoints = {r[1] for r in conn.execute(text("PRAGMA table_info(fine_tuning_job_checkpoints)"))}
        runs = {r[1] for r in conn.execute(text("PRAGMA table_info(eval_runs)"))}
        tenants = {r[1] for r in conn.execute(text("PRAGMA table_info(tenants)"))}
        named = conn.execute(text("SELECT model FROM fine_tuning_job_checkpoints")).scalar()
    assert (
        {"result_files", "created_ns", "stop_requested", "runs"} <= jobs
        and "parent" in models
        and "model" in checkpoints
        and "created_by_key" in runs
        and {"disabled_at", "limits"} <= tenants
    )
    assert named == "m:x:ckpt-step-4"
    with db.session() as s:
        job = s.get(JobRow, "j")
        assert job.runs == 2 and job.stop_requested is False  # its next run is named j-3


CHUNKING = {"chunk_max_tokens": 256, "chunk_overlap_tokens": 64}


def test_pages_follow_their_cursor_in_either_order_across_equal_timestamps(tmp_path: Path) -> None:
    from sqlalchemy import select

    from service.platform.db import Tenant, VectorStoreRow

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.session() as s:
        s.add_all([Tenant(id="t"), Tenant(id="u")])
        s.flush()
        # Two share a creation second: the id breaks the tie, so no row is skipped or repeated.
        for i, created in enumerate([5, 7, 7, 9]):
            s.add(VectorStoreRow(id=f"vs_{i}", tenant_id="t", name=str(i), created_at=created, **CHUNKING))
        s.add(VectorStoreRow(id="vs_other", tenant_id="u", name="x", created_at=6, **CHUNKING))
    q = select(VectorStoreRow).where(VectorStoreRow.tenant_id == "t")

    def walk(descending: bool) -> list[list[str]]:
        pages, after, more = [], None, True
        while more:
            rows, more = db.page(q, after, 2 if pages else 1, descending)
            pages.append([r.id for r in rows])
            after = rows[-1].id
        return pages

    assert walk(False) == [["vs_0"], ["vs_1", "vs_2"], ["vs_3"]]
    assert walk(True) == [["vs_3"], ["vs_2", "vs_1"], ["vs_0"]]
    assert [r.id for r in db.page(q, "vs-unknown")[0]] == ["vs_0", "vs_1", "vs_2", "vs_3"]
    assert db.page(q, "vs_3") == ([], False)


def test_a_row_of_another_owner_is_a_404_naming_what_is_missing(tmp_path: Path) -> None:
    from service.platform.db import Tenant, VectorStoreRow
    from service.platform.errors import ApiError

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    db.migrate()
    with db.session() as s:
        s.add(Tenant(id="t"))
        s.flush()
        s.add(VectorStoreRow(id="vs_1", tenant_id="t", name="x", **CHUNKING))
    assert db.get_or_404(VectorStoreRow, "vs_1", "vector_store_id", tenant_id="t").name == "x"
    with pytest.raises(ApiError) as err:
        db.get_or_404(VectorStoreRow, "vs_1", "vector_store_id", tenant_id="u")
    assert (err.value.status, err.value.param, err.value.message) == (
        404,
        "vector_store_id",
        "No vector store with id 'vs_1'.",
    )


def test_every_model_names_itself_in_a_404() -> None:
    from service.platform.db import Base

    models = [
        m.class_ for m in Base.registry.mappers if m.class_.__tablename__ not in ("schema_version", "tenants")
    ]
    nouns = [m.noun for m in models]
    assert "object" not in nouns and len(set(nouns)) == len(nouns), nouns
    from service.platform.db import FileRow, JobRow

    assert (FileRow.not_found_code, JobRow.not_found_code) == ("file_not_found", "job_not_found")
