"""`JobReporter`: what a training run reports (trainers.reporter.Reporter) written to the job's record:
status, step metrics as events, checkpoints (the newest few kept); the step metrics as OpenAI's result
CSV; and all of it to the job's tracking integrations (W&B, MLflow)."""

from __future__ import annotations

import csv
import io

from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.fine_tuning.tracking import Tracking, run_config, tracker_for
from service.platform.db import Database
from service.protocol.fine_tuning import JobContext
from trainers.lora_sft import store_from_context

KEEP_CHECKPOINTS = 3
RESULT_COLUMNS = ["step", "epoch", "train_loss", "valid_loss", "learning_rate", "tokens_per_second"]
DPO_COLUMNS = ["train_reward_margin", "train_reward_accuracy", "valid_reward_margin", "valid_reward_accuracy"]


class JobReporter:
    def __init__(self, context: JobContext) -> None:
        self.spec = context.spec
        self.job_id = context.spec.job_id
        self.store = JobStore(Database(context.database_url))
        self.objects = store_from_context(context)
        self.trained_tokens = 0
        trackers = [tracker_for(i, context.tracking, self.job_id) for i in self.spec.integrations]
        self.tracking = Tracking(trackers, lambda text: self.message(text, level="warn"))

    def started(self, message: str) -> None:
        self.store.transition(self.job_id, JobStatus.RUNNING, message)
        self.tracking.start(run_config(self.spec))

    def message(self, message: str, level: str = "info") -> None:
        """An event of the run, unless the job was paused or has ended meanwhile: then the run is being
        stopped, and "Run started on Ray" after "Job paused by the user" only said the pause had failed."""
        row = self.store.get(self.job_id)
        if row is not None and (row.status == JobStatus.PAUSED or JobStatus(row.status).is_terminal):
            return
        self.store.add_event(self.job_id, message, level=level)

    def metrics(self, data: dict) -> None:
        self.trained_tokens = data.get("trained_tokens", self.trained_tokens)
        text = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
        if "valid_loss" in data:
            text += f", validation loss={data['valid_loss']:.4f}"
        for split in ("train", "valid"):
            if f"{split}_reward_accuracy" in data:
                text += f", {split} reward accuracy={data[f'{split}_reward_accuracy']:.2f}"
        self.store.add_event(self.job_id, text, type="metrics", data=data)
        self.tracking.log(data, data["step"])

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        """Record the checkpoint, then forget the ones past the newest KEEP_CHECKPOINTS (the one of the lowest
        validation loss stays: it may become the job's model): rows first, so that no model id outlives
        its objects."""
        self.store.add_checkpoint(self.job_id, step, key, metrics)
        for row in self.store.prune_checkpoints(self.job_id, KEEP_CHECKPOINTS):
            self.objects.delete_prefix(row.key)
        self.store.add_event(self.job_id, f"Checkpoint saved at step {step}")

    def finish(self, status: str) -> None:
        """The run's end, for the tracking integrations: the model and where its adapter is."""
        summary = {"status": status, "trained_tokens": self.trained_tokens}
        if status == "succeeded":
            summary |= {
                "fine_tuned_model": self.spec.fine_tuned_model,
                "adapter": self.objects.url(self.spec.adapter_prefix),
            }
        self.tracking.finish(summary, status)

    def get_trained_tokens(self) -> int:
        return self.trained_tokens

    def results_csv(self) -> str:
        """OpenAI's result file: one line per step (and per validation), as CSV. Read from the job's events,
        so that the steps of an interrupted run count too (a step trained again counts once)."""
        rows: dict[tuple[int, bool], dict] = {}
        for event in self.store.metric_events(self.job_id):
            rows[(event.data["step"], "valid_loss" in event.data)] = event.data
        out = io.StringIO()
        columns = RESULT_COLUMNS + (DPO_COLUMNS if self.spec.method == "dpo" else [])
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[k] for k in sorted(rows))
        return out.getvalue()
