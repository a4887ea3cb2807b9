"""Engine, sessions and the schema version check.

Migration story: `Base.metadata.create_all` creates tables that do not exist yet (new features add
tables), and `MIGRATIONS[n]` upgrades a database from version n-1 to n for changes to existing tables.
A database newer than the code is refused instead of being silently damaged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Select, create_engine, event, select, text, tuple_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.platform.db.models import Base, SchemaVersion
from service.platform.errors import ApiError

T = TypeVar("T")
SCHEMA_VERSION = 7


def _add_result_files(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE fine_tuning_jobs ADD COLUMN result_files JSON"))


def _add_model_parent(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE fine_tuned_models ADD COLUMN parent VARCHAR(256)"))


def _add_job_created_ns(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE fine_tuning_jobs ADD COLUMN created_ns BIGINT"))
    conn.execute(text("UPDATE fine_tuning_jobs SET created_ns = created_at * 1000000000"))


def _add_checkpoint_model(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE fine_tuning_job_checkpoints ADD COLUMN model VARCHAR(300)"))
    conn.execute(
        text("CREATE INDEX ix_fine_tuning_job_checkpoints_model ON fine_tuning_job_checkpoints (model)")
    )
    rows = conn.execute(
        text(
            "SELECT c.id, c.step, j.spec FROM fine_tuning_job_checkpoints c "
            "JOIN fine_tuning_jobs j ON j.id = c.job_id"
        )
    )
    for checkpoint_id, step, spec in list(rows):
        spec = json.loads(spec) if isinstance(spec, str) else spec
        conn.execute(
            text("UPDATE fine_tuning_job_checkpoints SET model = :m WHERE id = :id"),
            {"m": f"{spec['fine_tuned_model']}:ckpt-step-{step}", "id": checkpoint_id},
        )


def _add_job_stop_requested_and_runs(conn: Connection) -> None:
    for column in ("stop_requested BOOLEAN NOT NULL DEFAULT FALSE", "runs INTEGER NOT NULL DEFAULT 0"):
        conn.execute(text(f"ALTER TABLE fine_tuning_jobs ADD COLUMN {column}"))
    conn.execute(text("UPDATE fine_tuning_jobs SET runs = attempts"))


def _add_run_created_by_key_and_tenant_controls(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE eval_runs ADD COLUMN created_by_key VARCHAR(40)"))
    conn.execute(text("ALTER TABLE tenants ADD COLUMN disabled_at INTEGER"))
    conn.execute(text("ALTER TABLE tenants ADD COLUMN limits JSON"))


# version -> function(connection) that upgrades from version-1. Add an entry with each schema change.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _add_result_files,
    3: _add_model_parent,
    4: _add_job_created_ns,
    5: _add_checkpoint_model,
    6: _add_job_stop_requested_and_runs,
    7: _add_run_created_by_key_and_tenant_controls,
}


class DatabaseError(RuntimeError):
    """The database cannot be reached or has a schema this code cannot use."""


class Database:
    """Owns the engine and hands out sessions; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> int:
        """Create missing tables and bring the schema to SCHEMA_VERSION; return the version."""
        try:
            Base.metadata.create_all(self.engine)
            with self.engine.begin() as conn:
                row = conn.execute(select(SchemaVersion.version)).scalar_one_or_none()
                if row is None:
                    conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
                    return SCHEMA_VERSION
                if row > SCHEMA_VERSION:
                    raise DatabaseError(
                        f"database {self.safe_url} has schema version {row}, newer than this tuneserve "
                        f"({SCHEMA_VERSION}); upgrade tuneserve or point TUNESERVE_DATABASE_URL elsewhere"
                    )
                for version in range(row + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[version](conn)
                conn.execute(SchemaVersion.__table__.update().values(version=SCHEMA_VERSION))
                return SCHEMA_VERSION
        except SQLAlchemyError as exc:
            raise DatabaseError(
                f"database {self.safe_url} is unusable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def get_or_404(self, model: type[T], key: object, param: str, **expected: object) -> T:
        """The row with primary key `key` if its attributes have the `expected` values (its tenant, its
        parent), else the 404 that names what is missing (another tenant's row does not exist for this
        one)."""
        with self.session() as s:
            row = s.get(model, key)
        if row is None or any(getattr(row, k) != v for k, v in expected.items()):
            shown = key[-1] if isinstance(key, tuple) else key  # (store, file): the file
            raise ApiError(404, f"No {model.noun} with id '{shown}'.", param=param, code=model.not_found_code)
        return row

    def page(
        self, query: Select, after: str | None = None, limit: int | None = None, descending: bool = False
    ) -> tuple[list, bool]:
        """One page of `query`'s rows after the row whose cursor is `after` (from the start for an unknown
        one), of `limit` rows (all without one): keyset pagination in SQL. The rows' model says its order and
        cursor (`page_order`, `page_cursor`; by default creation time and id). Returns (rows, has_more)."""
        model = query.column_descriptions[0]["entity"]
        order = [getattr(model, c) for c in model.page_order]
        cursor = getattr(model, model.page_cursor)
        with self.session() as s:
            if after is not None:
                anchor = s.execute(query.with_only_columns(*order).where(cursor == after)).first()
                if anchor is not None:
                    key, at = tuple_(*order), tuple_(*anchor)
                    query = query.where(key < at if descending else key > at)
            ordered = query.order_by(*(c.desc() if descending else c for c in order))
            rows = list(s.scalars(ordered if limit is None else ordered.limit(limit + 1)))
        if limit is None:
            return rows, False
        return rows[:limit], len(rows) > limit

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
