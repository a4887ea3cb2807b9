"""A training run's secrets (the database URL, which may hold a password, and the S3 secret key) never sit
in its Ray job's environment, which the Ray dashboard shows to anyone who can reach it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from service.fine_tuning.launcher import job_context, job_env, read_context
from service.fine_tuning.store import JobStore
from service.platform.db import Database, Tenant
from service.platform.settings import Settings
from service.protocol.fine_tuning import JobContext, TrainingSpec
from tests.helpers import add_job


def context(tmp_path: Path) -> JobContext:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql+psycopg://tuneserve:db-password-123@db:5432/tuneserve",
        s3_endpoint_url="http://s3:9000",
        s3_access_key_id="access",
        s3_secret_access_key="s3-secret-456",
    )
    db = Database(f"sqlite:///{tmp_path / 'jobs.db'}")
    db.migrate()
    with db.session() as s:
        s.add(Tenant(id="a"))
    store = JobStore(db)
    add_job(store, "j1", "a", 1)
    return job_context(settings, TrainingSpec.model_validate(store.get("j1").spec))


def test_the_job_environment_carries_no_secret_and_the_driver_gets_them_back(tmp_path: Path) -> None:
    full = context(tmp_path)
    secrets_file = tmp_path / "run" / "job-secrets.json"
    env = job_env(full, secrets_file)
    shown = json.dumps(env)
    assert "db-password-123" not in shown and "s3-secret-456" not in shown
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert read_context(env) == full  # the driver, on the stack's machine
    job_env(full, secrets_file)  # each submission rewrites it whole
    assert read_context(env) == full


def test_a_driver_without_the_file_takes_its_own_environment(tmp_path: Path) -> None:
    full = context(tmp_path)
    env = job_env(full, tmp_path / "run" / "job-secrets.json")
    elsewhere = {
        **env,
        "TUNESERVE_JOB_SECRETS_FILE": str(tmp_path / "not-on-this-node.json"),
        "TUNESERVE_DATABASE_URL": full.database_url,
        "TUNESERVE_S3_SECRET_ACCESS_KEY": "s3-secret-456",
    }
    assert read_context(elsewhere) == full  # a Kubernetes pod with the secrets in its own environment
