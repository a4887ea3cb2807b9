"""vLLM's CPU worker with quieter helper threads: the `worker_cls` of the service's engines on CPU.

On CPU, vLLM's worker creates its torch.distributed process groups with gloo even when it is the only
worker, and each gloo group runs a TCP loop thread that wakes every 10 ms only to check whether it should
stop (gloo's `transport/tcp/loop.cc`: `epoll_wait` with a 10 ms timeout). With SmolLM2 that is 13 threads
and ~1,300 wakeups a second, while the engine's OpenMP threads are pinned to every core: each wakeup
takes a core from one of them for a moment, and the others wait for it at the next barrier.

Linux's timer slack lets the kernel fire a thread's timeouts up to that much late, together with other
timers, and a thread inherits it from the thread that creates it. So the process groups (and the OpenMP
threads, which wait without timeouts) are created with a slack of `HELPER_SLACK_NS`, and the worker's own
thread, which runs the model and reads the engine's queue, gets its slack back. Gloo's loops still wake at
once for I/O (an event, not a timeout); only their "should I stop" checks come later, which delays a
worker's exit by at most 13 x 60 ms.

Measured on the 2-core developer machine (bench/RESULTS.md, twenty-seventh session): the worker's wakeups
fall from ~1,300 to ~220 a second, during bursts too, and vLLM's own server with this worker serves ~2-3 %
more tokens a second.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

from vllm.v1.worker.cpu_worker import CPUWorker as VllmCPUWorker

HELPER_SLACK_NS = 50_000_000  # 50 ms
_PR_SET_TIMERSLACK, _PR_GET_TIMERSLACK = 29, 30  # prctl(2)
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux's


def timer_slack_ns() -> int:
    """The calling thread's timer slack; -1 where there is none (not Linux)."""
    return _prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0) if _prctl else -1


@contextlib.contextmanager
def timer_slack(ns: int) -> Iterator[None]:
    """The calling thread's timer slack set to `ns` inside, restored after: the threads it creates
    meanwhile keep `ns`. Without the right (not Linux) it changes nothing."""
    before = timer_slack_ns()
    changed = before >= 0 and _prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0
    try:
        yield
    finally:
        if changed:
            _prctl(_PR_SET_TIMERSLACK, before, 0, 0, 0)


class CPUWorker(VllmCPUWorker):
    def init_device(self) -> None:  # creates the process groups and binds the OpenMP threads
        with timer_slack(HELPER_SLACK_NS):
            super().init_device()
