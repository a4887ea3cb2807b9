"""The same SQLAlchemy code on a real PostgreSQL server (started here from the machine's binaries)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.platform.auth import KeyStore
from service.platform.db import Database
from service.platform.net import free_port

PG_BIN = next((p for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*cmd: str) -> list[str]:
    # PostgreSQL refuses to run as root; the Debian package provides a `postgres` user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="ts-pg-"))
    data = root / "data"
    shutil.chown(root, "postgres") if os.geteuid() == 0 else None
    port = free_port()
    subprocess.run(
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"),
        check=True,
        capture_output=True,
    )
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -h 127.0.0.1",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        ready = _as_postgres(str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port))
        while subprocess.run(ready, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not accept connections in 30 s"
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_migrate_and_keys_on_postgres(postgres_url: str) -> None:
    db = Database(postgres_url)
    assert db.migrate() == db.migrate()  # idempotent
    keys = KeyStore(db, admin_key="ts-admin")
    row, key = keys.create("acme", "pg")
    principal = keys.authenticate(key)
    assert principal is not None and principal.tenant == "acme" and not principal.is_admin
    assert keys.authenticate("ts-admin").is_admin
    keys.revoke(row.id)
    assert keys.authenticate(key) is None
    db.close()


def test_wrong_postgres_url_is_a_clear_error() -> None:
    from service.platform.db import DatabaseError

    db = Database(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x")
    with pytest.raises(DatabaseError, match="unusable"):
        db.migrate()
