"""Runs a training job as a Ray job (the Jobs API): a driver process that owns the Ray Train run.

The API never trains in its own process; a crash or an out-of-memory kill of a run takes down its Ray
job only. The driver gets the resolved TrainingSpec and the addresses it needs (database, object store)
in one JSON environment variable, and nothing else; the secrets (database URL, S3 secret key) are in a
file readable by the stack's user only, whose path is in the environment (`read_context`). A driver on a
node without that file (a Kubernetes pod) takes them from its own TUNESERVE_* environment instead.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from service.platform.secret_files import replace_secret
from service.platform.settings import Settings
from service.protocol.fine_tuning import (
    JOB_CONTEXT_ENV,
    JOB_SECRETS_FILE_ENV,
    JobContext,
    TrackingSettings,
    TrainingSpec,
)


@dataclass(frozen=True)
class RunInfo:
    """A launched run as the launcher sees it. `state` is one of PENDING, RUNNING, SUCCEEDED, FAILED,
    STOPPED, or LOST (the launcher has no such run: the cluster was restarted)."""

    state: str
    message: str = ""

    @property
    def is_active(self) -> bool:
        return self.state in ("PENDING", "RUNNING")


class Launcher(Protocol):
    def submit(self, submission_id: str, context: JobContext) -> None: ...
    def info(self, submission_id: str) -> RunInfo: ...
    def stop(self, submission_id: str) -> None: ...
    def capacity(self) -> dict[str, float]: ...
    def free(self) -> dict[str, float]: ...


class RayJobLauncher:
    """Launcher over Ray's Jobs API (`JobSubmissionClient` against the dashboard)."""

    def __init__(self, dashboard_url: str, secrets_file: Path) -> None:
        self.dashboard_url = dashboard_url
        self.secrets_file = secrets_file
        self._client = None

    @property
    def client(self):  # JobSubmissionClient, imported lazily (ray is heavy)
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.dashboard_url)
        return self._client

    def submit(self, submission_id: str, context: JobContext) -> None:
        self.client.submit_job(
            submission_id=submission_id,
            entrypoint=f"{sys.executable} -m service.fine_tuning.driver",
            # The driver itself only waits on Ray Train; its workers reserve the CPUs.
            entrypoint_num_cpus=0,
            runtime_env={"env_vars": job_env(context, self.secrets_file)},
            metadata={"tuneserve_job_id": context.spec.job_id, "tenant": context.spec.tenant},
        )

    def info(self, submission_id: str) -> RunInfo:
        try:
            details = self.client.get_job_info(submission_id)
        except RuntimeError as exc:  # the Jobs API raises RuntimeError for an unknown id
            if "does not exist" in str(exc) or "404" in str(exc):
                return RunInfo("LOST", "the Ray job no longer exists (was the cluster restarted?)")
            raise
        return RunInfo(str(details.status.value), details.message or "")

    def stop(self, submission_id: str) -> None:
        with contextlib.suppress(RuntimeError):  # already gone
            self.client.stop_job(submission_id)

    def capacity(self) -> dict[str, float]:
        """Total resources of the cluster (CPU, GPU, ...), as Ray counts them."""
        import ray

        return dict(ray.cluster_resources()) if ray.is_initialized() else {}

    def free(self) -> dict[str, float]:
        """Resources no task, actor or placement group holds right now (empty: unknown)."""
        import ray

        return dict(ray.available_resources()) if ray.is_initialized() else {}


def job_env(context: JobContext, secrets_file: Path) -> dict[str, str]:
    """The Ray job's environment: the context without its secrets, and where they are (written now)."""
    replace_secret(secrets_file, json.dumps(context.secrets()))
    return {
        JOB_CONTEXT_ENV: context.without_secrets().model_dump_json(),
        JOB_SECRETS_FILE_ENV: str(secrets_file),
    }


def read_context(environ: Mapping[str, str]) -> JobContext:
    """The driver's JobContext: its environment's, with the secrets from the stack's file, else from the
    driver's own TUNESERVE_* variables."""
    context = JobContext.model_validate_json(environ[JOB_CONTEXT_ENV])
    path = Path(environ.get(JOB_SECRETS_FILE_ENV, ""))
    if path.is_file():
        secrets = json.loads(path.read_text())
    else:
        secrets = {name: environ.get(f"TUNESERVE_{name.upper()}") for name in context.secrets()}
    return context.model_copy(update=secrets)


def job_context(settings: Settings, spec: TrainingSpec) -> JobContext:
    return JobContext(
        spec=spec,
        database_url=settings.resolved_database_url,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key
        else None,
        s3_region=settings.s3_region,
        s3_bucket=settings.s3_bucket,
        tracking=TrackingSettings(
            wandb_mode=settings.wandb_mode,
            wandb_dir=str(settings.resolved_data_dir / "tracking"),
            mlflow_tracking_uri=settings.resolved_mlflow_tracking_uri,
        ),
        capacity_wait_s=settings.training_capacity_wait_s,
        max_attempts=settings.training_max_attempts,
    )
