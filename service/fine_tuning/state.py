"""The fine-tuning job state machine. Pure: no I/O.

validating_files -> queued -> running -> succeeded | failed | cancelled
queued | running -> paused -> queued (resumed: the run continues from its last checkpoint)
(any non-terminal state may be cancelled, and fail unless paused: nothing runs then)
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

_FORWARD = {
    JobStatus.VALIDATING_FILES: {JobStatus.QUEUED},
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.PAUSED},
    # RUNNING -> QUEUED: the run was lost (node or cluster gone) and is scheduled again.
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.PAUSED},
    JobStatus.PAUSED: {JobStatus.QUEUED},
}


class InvalidTransition(ValueError):
    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        self.current, self.target = current, target
        super().__init__(f"a {current.value} job cannot become {target.value}")


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    if current.is_terminal:
        return False
    if target == JobStatus.CANCELLED:
        return True
    if target == JobStatus.FAILED:
        return current != JobStatus.PAUSED
    return target in _FORWARD.get(current, set())


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
