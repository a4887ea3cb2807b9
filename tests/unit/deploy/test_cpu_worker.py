"""The service's vLLM CPU worker (deploy/cpu_worker.py): the threads it creates under a timer slack keep
it, its own thread gets its slack back, and gloo's loop threads made that way wake several times less."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from deploy.cpu_worker import HELPER_SLACK_NS, CPUWorker, timer_slack, timer_slack_ns
from deploy.llm import CPU_WORKER_CLASS


def slack_of_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(timer_slack_ns()))
    thread.start()
    thread.join()
    return seen[0]


def test_threads_made_under_the_slack_keep_it_and_the_caller_gets_its_own_back() -> None:
    seen = {}

    def caller() -> None:  # its own thread: pytest's keeps its slack whatever happens here
        seen["before"] = timer_slack_ns()
        with timer_slack(HELPER_SLACK_NS):
            seen["inside"] = timer_slack_ns()
            seen["made inside"] = slack_of_a_new_thread()
        seen["after"] = timer_slack_ns()
        seen["made after"] = slack_of_a_new_thread()

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join()
    assert seen["before"] != HELPER_SLACK_NS
    assert seen["inside"] == seen["made inside"] == HELPER_SLACK_NS
    assert seen["after"] == seen["made after"] == seen["before"]


# A gloo process group of one, as vLLM's CPU worker makes them, with or without the worker's slack; the
# wakeups a second of its loop thread over one second. In a process of its own: the group is global.
GLOO_LOOP = textwrap.dedent(
    """
    import contextlib, os, sys, time
    import torch.distributed as dist
    from deploy.cpu_worker import HELPER_SLACK_NS, timer_slack

    with timer_slack(HELPER_SLACK_NS) if sys.argv[1] == "slack" else contextlib.nullcontext():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)

    def switches():
        counts = {}
        for tid in os.listdir("/proc/self/task"):
            if open(f"/proc/self/task/{tid}/comm").read().strip() == "gloo_tcp_loop":
                status = open(f"/proc/self/task/{tid}/status").read().splitlines()
                counts[tid] = sum(int(l.split()[1]) for l in status if "ctxt_switches" in l)
        return counts

    deadline = time.monotonic() + 30
    while not (before := switches()):  # the loop thread may start after the call returned
        assert time.monotonic() < deadline, "no gloo_tcp_loop thread"
        time.sleep(0.01)
    time.sleep(1.0)
    after = switches()
    print(max(after[t] - before[t] for t in before if t in after))
    """
)


def gloo_loop_wakeups(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", GLOO_LOOP, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_gloo_loop_threads_made_under_the_slack_wake_several_times_less() -> None:
    stock, quiet = gloo_loop_wakeups("stock"), gloo_loop_wakeups("slack")
    assert stock >= 60  # gloo's 10 ms timeout: ~100 a second
    assert quiet * 3 <= stock  # ~17 a second with 50 ms of slack


def test_the_engine_arguments_name_this_worker() -> None:
    from vllm.utils.import_utils import resolve_obj_by_qualname
    from vllm.v1.worker.cpu_worker import CPUWorker as VllmCPUWorker

    assert resolve_obj_by_qualname(CPU_WORKER_CLASS) is CPUWorker
    assert issubclass(CPUWorker, VllmCPUWorker) and "init_device" in CPUWorker.__dict__
