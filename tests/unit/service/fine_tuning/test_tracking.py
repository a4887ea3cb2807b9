"""Experiment tracking: the reporter of a job with W&B (offline) and MLflow (SQLite) integrations, read
back from what each wrote; a failing tracker becomes a warning; bad integration blocks are 400s."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from service.fine_tuning.reporting import JobReporter
from service.fine_tuning.tracking import Tracking
from service.platform.db import Database, JobRow, Tenant
from service.protocol.fine_tuning import JobContext, TrackingSettings
from tests.helpers import add_job

WANDB = {"type": "wandb", "wandb": {"project": "tuneserve-tests", "name": "codeword", "tags": ["unit"]}}
MLFLOW = {"type": "mlflow", "mlflow": {"experiment": "codeword", "tags": {"team": "ml"}}}


def context_for(tmp_path: Path, integrations: list[dict]) -> JobContext:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    db = Database(url)
    db.migrate()
    with db.session() as s:
        s.add(Tenant(id="a"))
    from service.fine_tuning.store import JobStore

    add_job(JobStore(db), "ftjob-track", "a", 1)
    with db.session() as s:
        row = s.get(JobRow, "ftjob-track")
        row.spec = {**row.spec, "integrations": integrations}
        spec = row.spec
    return JobContext.model_validate(
        {
            "spec": spec,
            "database_url": url,
            "s3_endpoint_url": "http://127.0.0.1:9",
            "s3_access_key_id": "a",
            "s3_secret_access_key": "b",
            "s3_region": "us-east-1",
            "s3_bucket": "tuneserve",
            "tracking": TrackingSettings(
                wandb_dir=str(tmp_path / "tracking"),
                mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow' / 'runs.db'}",
            ),
        }
    )


def run_steps(reporter: JobReporter, losses: list[float]) -> None:
    reporter.started("Training started")
    for step, loss in enumerate(losses, 1):
        reporter.metrics(
            {"step": step, "total_steps": len(losses), "train_loss": loss, "trained_tokens": 10 * step}
        )
    reporter.finish("succeeded")


def test_mlflow_gets_config_step_metrics_and_the_adapter(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    context = context_for(tmp_path, [MLFLOW])
    run_steps(JobReporter(context), [2.0, 1.5, 1.0])
    client = MlflowClient(tracking_uri=context.tracking.mlflow_tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("codeword").experiment_id])
    assert run.info.run_name == "ftjob-track" and run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.0001" and run.data.params["hyperparameters.n_epochs"] == "1"
    assert (
        run.data.tags["team"] == "ml" and run.data.tags["tuneserve.adapter"] == "s3://tuneserve/adapters/m/x/"
    )
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5), (3, 1.0)]

    # A resumed run (a new reporter of the same job) continues the same MLflow run.
    reporter = JobReporter(context)
    reporter.started("Training started")
    reporter.metrics({"step": 4, "total_steps": 4, "train_loss": 0.5})
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run.info.run_id]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4


def test_wandb_offline_run_holds_config_and_step_metrics(tmp_path: Path) -> None:
    context = context_for(tmp_path, [WANDB])
    run_steps(JobReporter(context), [2.0, 1.5, 1.0])
    [log] = (tmp_path / "tracking" / "wandb").glob("offline-run-*-ftjob-track/run-ftjob-track.wandb")
    # wandb-core writes the log behind `finish()`: read it once the run's exit record is in.
    deadline = time.monotonic() + 30
    while "exit" not in (kinds := [r.WhichOneof("record_type") for r in _wandb_records(log)]):
        assert time.monotonic() < deadline, kinds
        time.sleep(0.2)
    records = list(_wandb_records(log))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name, list(run.tags)) == ("tuneserve-tests", "codeword", ["unit"])
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["learning_rate"] == 1e-4 and config["lora"]["alpha"] == 16
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [(h["_step"], h["train_loss"]) for h in history] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    summary = {
        u.key: json.loads(u.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
        if u.key
    }
    assert summary["adapter"] == "s3://tuneserve/adapters/m/x/"


def test_a_failing_tracker_becomes_one_warning_and_training_goes_on() -> None:
    class Broken:
        name = "wandb"

        def start(self, config: dict) -> None:
            raise ConnectionError("no network")

    warnings: list[str] = []
    tracking = Tracking([Broken()], warnings.append)
    tracking.start({})
    tracking.log({"step": 1, "train_loss": 1.0}, 1)
    tracking.finish({}, "succeeded")
    assert warnings == ["The wandb integration failed to start and is off for this run: no network"]


@pytest.mark.parametrize(
    "integrations, param",
    [
        ([{"type": "comet", "comet": {}}], "integrations.0"),
        ([{"type": "wandb", "wandb": {}}], "integrations.0.wandb.project"),
        ([{"type": "wandb", "wandb": {"project": "p", "colour": "red"}}], "integrations.0.wandb.colour"),
        (
            [{"type": "mlflow", "mlflow": {"tracking_uri": "file:///etc"}}],
            "integrations.0.mlflow.tracking_uri",
        ),
    ],
)
def test_bad_integration_blocks_are_400s_naming_the_field(
    tmp_path: Path, integrations: list, param: str
) -> None:
    from fastapi.testclient import TestClient

    from service.api.app import create_app
    from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings

    with TestClient(
        create_app(offline_settings(tmp_path), store=MemoryStore()), headers=auth(ADMIN)
    ) as client:
        body = {"model": "m", "training_file": "file-x", "integrations": integrations}
        err = assert_openai_error(client.post("/v1/fine_tuning/jobs", json=body), 400, "invalid_value")
    assert err["param"] == param, err


def _wandb_records(path: Path):
    """The records of a W&B transaction log (LevelDB's log format: 32 KiB blocks of framed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_a_run_being_stopped_after_a_pause_or_cancel_adds_no_messages(tmp_path: Path) -> None:
    """A run stopped by a pause went on to say "Run started on Ray", after "Job paused by the user"."""
    from service.fine_tuning.state import JobStatus
    from service.fine_tuning.store import JobStore

    context = context_for(tmp_path, [])
    store = JobStore(Database(context.database_url))
    reporter = JobReporter(context)
    reporter.message("Run started on Ray")
    for status in (JobStatus.PAUSED, JobStatus.CANCELLED):
        with store.db.session() as s:
            s.get(JobRow, "ftjob-track").status = status.value
        reporter.message(f"said while {status}")
    messages = [e.message for e in store.events("ftjob-track", limit=50)[0]]
    assert "Run started on Ray" in messages and not [m for m in messages if m.startswith("said while")]
