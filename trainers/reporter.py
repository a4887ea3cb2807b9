"""How a training run tells the service what it is doing: status, step metrics, checkpoints.

`Reporter` is the interface; the service implements it (`service.fine_tuning.reporting.JobReporter`, which
writes to the database). In Ray that implementation runs as a small actor on the driver's node (where the
database file is, for the SQLite default) and the rank-0 worker calls it through `ActorReporter`;
standalone runs (tests, benchmarks) use `NullReporter`.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def started(self, message: str) -> None: ...
    def message(self, message: str, level: str = "info") -> None: ...
    def metrics(self, data: dict) -> None: ...
    def checkpoint(self, step: int, key: str, metrics: dict) -> None: ...


class ActorReporter:
    """Calls a JobReporter actor without waiting; Ray keeps one caller's calls in order."""

    def __init__(self, handle) -> None:  # a Ray actor handle of a Reporter
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
        self.events.append(("message", message) if level == "info" else (level, message))

    def metrics(self, data: dict) -> None:
        self.events.append(("metrics", data))

    def checkpoint(self, step: int, key: str, metrics: dict) -> None:
        self.events.append(("checkpoint", {"step": step, "key": key, **metrics}))

    def recorded(self) -> list[tuple[str, object]]:
        """The events (for a NullReporter run as a Ray actor, whose attributes cannot be read)."""
        return self.events

    @property
    def losses(self) -> list[float]:
        return [d["train_loss"] for kind, d in self.events if kind == "metrics"]
