"""Experiment tracking: a job's `integrations` receive its configuration, its step metrics and, at the end,
its model and where the adapter is. Weights & Biases (OpenAI's integration; offline under the data dir
unless the stack is set online, then `wandb sync` uploads it) and MLflow (an extension; the stack's
tracking URI; by default SQLite under the data dir, which `mlflow ui --backend-store-uri` opens).

Trackers run in the reporter actor beside the training driver. A run resumed after an interruption
continues the same tracking run (W&B: the job id is the run id; MLflow: the run tagged with the job id).
A tracker that fails never fails the job: `Tracking` turns its failure into one warning and drops it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from service.protocol.fine_tuning import Integration, MlflowIntegration, TrackingSettings, TrainingSpec

JOB_TAG = "tuneserve.job_id"


class Tracker(Protocol):
    name: str

    def start(self, config: dict) -> None: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def finish(self, summary: dict, status: str) -> None: ...


def run_config(spec: TrainingSpec) -> dict:
    """What a tracking run records as its configuration."""
    return {
        "job_id": spec.job_id,
        "base_model": spec.base_model,
        "parent_model": spec.parent_model,
        "fine_tuned_model": spec.fine_tuned_model,
        "training_file": spec.training_file,
        "validation_file": spec.validation_file,
        "n_train_examples": spec.n_train_examples,
        "hyperparameters": spec.hyperparameters.model_dump(),
        "learning_rate": spec.learning_rate,
        "seed": spec.seed,
        "lora": spec.lora.model_dump(),
        "deepspeed": spec.deepspeed.model_dump(),
        "num_workers": spec.resources.num_workers,
        "max_seq_length": spec.max_seq_length,
    }


class WandbTracker:
    name = "wandb"

    def __init__(self, options, settings: TrackingSettings, job_id: str) -> None:
        self.options, self.settings, self.job_id = options, settings, job_id

    def start(self, config: dict) -> None:
        import wandb

        Path(self.settings.wandb_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.options.project,
            entity=self.options.entity,
            name=self.options.name or self.job_id,
            tags=self.options.tags,
            config=config,
            id=self.job_id,
            resume="allow",
            dir=self.settings.wandb_dir,
            mode=self.settings.wandb_mode,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict, status: str) -> None:
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if status == "succeeded" else 1)


class MlflowTracker:
    name = "mlflow"

    def __init__(self, options, settings: TrackingSettings, job_id: str) -> None:
        self.options, self.settings, self.job_id = options, settings, job_id

    def start(self, config: dict) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri = self.settings.mlflow_tracking_uri
        if uri.startswith(
            "sqlite:///"
        ):  # the default, under the data dir: SQLite makes the file, not its folder
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(self.options.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.options.experiment)
        )
        earlier = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{self.job_id}'"
        )
        if earlier:  # a resumed run: continue the job's tracking run
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {**self.options.tags, JOB_TAG: self.job_id}
        run = self.client.create_run(experiment_id, run_name=self.options.run_name or self.job_id, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in _flatten(config).items()]
        self.client.log_batch(self.run_id, params=params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def finish(self, summary: dict, status: str) -> None:
        for key, value in summary.items():
            self.client.set_tag(self.run_id, f"tuneserve.{key}", str(value))
        self.client.set_terminated(self.run_id, "FINISHED" if status == "succeeded" else "FAILED")


def tracker_for(integration: Integration, settings: TrackingSettings, job_id: str) -> Tracker:
    if isinstance(integration, MlflowIntegration):
        return MlflowTracker(integration.mlflow, settings, job_id)
    return WandbTracker(integration.wandb, settings, job_id)


class Tracking:
    """The job's trackers together; `warn` reports a tracker's failure (it is then left out)."""

    def __init__(self, trackers: list[Tracker], warn: Callable[[str], None]) -> None:
        self.trackers, self.warn = trackers, warn

    def start(self, config: dict) -> None:
        self._each(lambda t: t.start(config), "start")

    def log(self, data: dict, step: int) -> None:
        metrics = {k: float(v) for k, v in data.items() if k != "step" and isinstance(v, int | float)}
        self._each(lambda t: t.log(metrics, step), "log")

    def finish(self, summary: dict, status: str) -> None:
        self._each(lambda t: t.finish(summary, status), "finish")

    def _each(self, call: Callable[[Tracker], None], what: str) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:  # tracking is a side channel: the training goes on without it
                self.trackers.remove(tracker)
                self.warn(f"The {tracker.name} integration failed to {what} and is off for this run: {exc}")


def _flatten(config: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
