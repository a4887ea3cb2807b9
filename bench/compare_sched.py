"""One stack; a group of its processes switched between the normal scheduling policy (A) and another (B)
between bursts: what Linux's CPU priorities can take from the engine's way, without the drift between
two stacks or two runs (rounds alternate which side goes first).

vLLM's engine core and worker are never touched. Groups, by what a process's command line contains:
`offpath` is everything not on a request's path (all but the Serve replicas), `all` includes the replicas.

    .venv/bin/python bench/compare_sched.py --group offpath --policy idle --rounds 8
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serving import MODEL, http_burst  # noqa: E402
from bench.common import descendants, read_proc, stack, stack_root  # noqa: E402
from bench.compare_stacks import print_ab  # noqa: E402

ENGINE = ("VLLM::EngineCore", "VLLM::Worker", "VllmWorker")
GROUPS: dict[str, tuple[str, ...]] = {
    "dashboard": (
        "dashboard",
        "DashboardAgent",
        "RuntimeEnvAgent",
        "multiprocessing",
        "autoscaler",
        "log_monitor",
        "ray.util.client.server",
    ),
    "core": ("gcs_server", "raylet/raylet"),
    "serve": ("ServeController", "ProxyActor"),
    "supervisor": ("service.cli", "rclone"),
}
POLICIES = {"batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


def in_group(cmdline: str, group: str) -> bool:
    if not cmdline or any(marker in cmdline for marker in ENGINE):
        return False
    if group == "all":
        return True
    if group == "offpath":
        return "ServeReplica" not in cmdline
    return any(marker in cmdline for marker in GROUPS[group])


def set_policy(root: int, group: str, policy: int) -> int:
    """Every thread of the group's processes under `root` to `policy`; how many threads."""
    threads = 0
    for pid in descendants(root):
        if not in_group(read_proc(f"/proc/{pid}/cmdline"), group):
            continue
        for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else ():
            try:
                os.sched_setscheduler(int(tid), policy, os.sched_param(0))
                threads += 1
            except OSError:  # the thread ended
                pass
    return threads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", choices=["all", "offpath", *GROUPS], default="offpath")
    parser.add_argument("--policy", choices=list(POLICIES), default="idle")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with stack() as (url, headers, data_dir):
        root = stack_root(data_dir)
        http_burst(url, headers, [MODEL.name], True)  # warm-up
        tps = {(side, stream): [] for side in "AB" for stream in (True, False)}
        ttft = {"A": [], "B": []}
        try:
            for i in range(args.rounds):
                for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    policy = os.SCHED_OTHER if side == "A" else POLICIES[args.policy]
                    threads = set_policy(root, args.group, policy)
                    for stream in (True, False):
                        r = http_burst(url, headers, [MODEL.name], stream)
                        tps[(side, stream)].append(r["tokens_per_second"])
                        if stream:
                            ttft[side].append(r["ttft_p50"])
                print(
                    f"round {i + 1} ({threads} threads): "
                    + ", ".join(
                        f"{s} {'streamed' if st else 'plain'} {v[-1]:.0f}" for (s, st), v in tps.items()
                    ),
                    flush=True,
                )
        finally:
            set_policy(root, args.group, os.SCHED_OTHER)
    print_ab(tps, ttft)


if __name__ == "__main__":
    main()
