"""The fine-tuning job state machine. Pure: no I/O.

validating_files -> queued -> running -> succeeded | failed | cancelled
(any non-terminal state may go to failed or cancelled)
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

_FORWARD = {
    JobStatus.VALIDATING_FILES: {JobStatus.QUEUED},
    JobStatus.QUEUED: {JobStatus.RUNNING},
    # RUNNING -> QUEUED: the run was lost (node or cluster gone) and is scheduled again.
    JobStatus.RUNNING: {JobStatus.SUCCEEDED, JobStatus.QUEUED},
}


class InvalidTransition(ValueError):
    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        self.current, self.target = current, target
        super().__init__(f"a {current.value} job cannot become {target.value}")


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    if current.is_terminal:
        return False
    if target in (JobStatus.FAILED, JobStatus.CANCELLED):
        return True
    return target in _FORWARD.get(current, set())


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)
