"""`JobReporter`: what a training run reports (trainers.reporter.Reporter) written to the job's record:
status, step metrics as events, checkpoints; and the step metrics as OpenAI's result CSV."""

from __future__ import annotations

import csv
import io

from service.fine_tuning.state import JobStatus
from service.fine_tuning.store import JobStore
from service.platform.db import Database


class JobReporter:
    def __init__(self, database_url: str, job_id: str) -> None:
        self.job_id = job_id
        self.store = JobStore(Database(database_url))
        self.trained_tokens = 0
        self.rows: list[dict] = []

    def started(self, message: str) -> None:
        self.store.transition(self.job_id, JobStatus.RUNNING, message)

    def message(self, message: str, level: str = "info") -> None:
        self.store.add_event(self.job_id, message, level=level)

    def metrics(self, data: dict) -> None:
        self.trained_tokens = data.get("trained_tokens", self.trained_tokens)
        self.rows.append(data)
        text = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
        if "valid_loss" in data:
            text += f", validation loss={data['valid_loss']:.4f}"
        self.store.add_event(self.job_id, text, type="metrics", data=data)

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        self.store.add_checkpoint(self.job_id, step, key, metrics)
        self.store.add_event(self.job_id, f"Checkpoint saved at step {step}")

    def get_trained_tokens(self) -> int:
        return self.trained_tokens

    def results_csv(self) -> str:
        """OpenAI's result file: one line per step (and per validation), as CSV."""
        out = io.StringIO()
        columns = ["step", "epoch", "train_loss", "valid_loss", "learning_rate", "tokens_per_second"]
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()
