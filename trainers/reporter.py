"""How a training run tells the service what it is doing: status, step metrics, checkpoints.

`JobReporter` writes to the service's database. In Ray it runs as a small actor on the driver's node
(where the database file is, for the SQLite default), and the rank-0 worker calls it through
`ActorReporter`; standalone runs (tests, benchmarks) call a `JobReporter` or `NullReporter` directly.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def started(self, message: str) -> None: ...
    def message(self, message: str, level: str = "info") -> None: ...
    def metrics(self, data: dict) -> None: ...
    def checkpoint(self, step: int, key: str, metrics: dict) -> None: ...


class JobReporter:
    def __init__(self, database_url: str, job_id: str) -> None:
        from service.db import Database
        from service.jobs.store import JobStore

        self.job_id = job_id
        self.store = JobStore(Database(database_url))
        self.trained_tokens = 0
        self.rows: list[dict] = []

    def started(self, message: str) -> None:
        from service.jobs.state import JobStatus

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
        import csv
        import io

        out = io.StringIO()
        columns = ["step", "epoch", "train_loss", "valid_loss", "learning_rate", "tokens_per_second"]
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()


class ActorReporter:
    """Calls a JobReporter actor without waiting; Ray keeps one caller's calls in order."""

    def __init__(self, handle) -> None:  # noqa: ANN001 - a Ray actor handle
        self.handle = handle

    def started(self, message: str) -> None:
        self.handle.started.remote(message)

    def message(self, message: str, level: str = "info") -> None:
        self.handle.message.remote(message, level)

    def metrics(self, data: dict) -> None:
        self.handle.metrics.remote(data)

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        # Waited for: the checkpoint row must exist before the run can be called done.
        import ray

        ray.get(self.handle.checkpoint.remote(step, key, metrics))


class NullReporter:
    """Collects what a run reports, in memory (tests and benchmarks)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def started(self, message: str) -> None:
        self.events.append(("started", message))

    def message(self, message: str, level: str = "info") -> None:
        self.events.append(("message", message))

    def metrics(self, data: dict) -> None:
        self.events.append(("metrics", data))

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        self.events.append(("checkpoint", {"step": step, "key": key, **metrics}))

    @property
    def losses(self) -> list[float]:
        return [d["train_loss"] for kind, d in self.events if kind == "metrics"]
