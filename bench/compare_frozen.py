"""The service against vLLM's own OpenAI server on the same minute: both up at once, the one not being
measured frozen (SIGSTOP on every one of its processes), turns alternating.

Sequential runs (A B B A) on this machine drift by +-20 % within an hour, as much as the effects measured,
and two stacks up at once each pay for the other's idle processes. Here the side that waits is stopped
outright, so the side measured has the machine to itself as if alone, and the two sides' turns are
seconds apart. Each turn starts with the side thawed and left alone for `SETTLE_S`, then its bursts;
the rounds' orders are balanced (`balanced_orders`). The result is the median over rounds of service / vLLM.

    .venv/bin/python bench/compare_frozen.py --rounds 8            # text: 16 chats x 128 tokens
    .venv/bin/python bench/compare_frozen.py --vision --rounds 8   # images: 16 chats x 32 tokens
    .venv/bin/python bench/compare_frozen.py --service --service RAY_X=1   # two stacks: defaults, and RAY_X=1
    .venv/bin/python bench/compare_frozen.py --mix   # text, base streamed and a mix of 3 adapters, streamed
    .venv/bin/python bench/compare_frozen.py --bare  # also the first stack with everything off the
                                                     # request's path stopped: what its background costs
    .venv/bin/python bench/compare_frozen.py --engine-cores auto  # the engines on one core, the other
                                                                  # left to the rest of each side
    .venv/bin/python bench/compare_frozen.py --serve-llm-direct  # also Ray Serve LLM's leanest
                                                                 # deployment (bench.common.serve_llm_direct)

Ray's health checks survive the freeze: every process of the stack stops and resumes together.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_serving, bench_vision  # noqa: E402
from bench.common import (  # noqa: E402
    chat_burst,
    descendants,
    read_proc,
    serve_llm_direct,
    stack_root,
    vllm_server,
)
from bench.compare_stacks import stack_with  # noqa: E402

SETTLE_S = 3.0  # after a thaw, before the side's first burst: the catch-up of timers that fired meanwhile


def signal_tree(root: int, sig: int) -> None:
    """`sig` to `root` and every process below it."""
    for pid in descendants(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass(frozen=True)
class Side:
    """What is measured in turns: a stack, or vLLM's server."""

    url: str
    headers: dict
    root: int  # the process whose tree is stopped and resumed
    models: list[str]  # the adapter mix's model ids
    held: frozenset[int] = frozenset()  # processes kept stopped during this side's turns


def vllm_server_pid() -> int:
    """This process's child running vLLM's OpenAI server."""
    for pid in descendants(os.getpid()):
        if "vllm.entrypoints.openai.api_server" in read_proc(f"/proc/{pid}/cmdline"):
            return pid
    raise RuntimeError("vLLM's server is not a child of this process")


def burst(url: str, headers: dict, bodies: list[dict]) -> tuple[float, float]:
    """One burst: tokens/s and the median time to first token."""
    wall, results = chat_burst(url, headers, bodies)
    return sum(n for _, n in results) / wall, statistics.median(t for t, _ in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--vision", action="store_true", help="the test VLM, a picture per chat, streamed")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="one more side: the first stack with only its Serve replicas (and their engines) running",
    )
    parser.add_argument("--mix", action="store_true", help="text, base and a 3-adapter mix, both streamed")
    parser.add_argument(
        "--serve-llm-direct",
        action="store_true",
        help="one more side: Ray Serve LLM's direct streaming alone on a bare Ray (engines on all cores)",
    )
    parser.add_argument("--hold-serve-llm-direct", type=Path, help=argparse.SUPPRESS)  # the side's process
    parser.add_argument(
        "--engine-cores",
        choices=["all", "auto"],
        default="all",
        help="the engines' CPU binding on every side (TUNESERVE_SERVING_CPU_THREADS); auto: vLLM's default, "
        "one core left to everything else",
    )
    parser.add_argument(
        "--service",
        nargs="*",
        action="append",
        metavar="KEY=VALUE",
        help="a service stack with these settings (TUNESERVE_ or RAY_ ones); repeat for several; default: "
        "one with none",
    )
    args = parser.parse_args()
    if args.hold_serve_llm_direct:
        model = bench_vision.MODEL if args.vision else bench_serving.MODEL
        return hold_serve_llm_direct(model, args.hold_serve_llm_direct)
    if args.mix and args.vision:
        parser.error("--mix is for text: the adapters are the text model's")
    if args.serve_llm_direct and (args.mix or args.engine_cores != "all"):
        parser.error("--serve-llm-direct serves the base model with the engine on all cores")
    services = [[f"TUNESERVE_SERVING_CPU_THREADS={args.engine_cores}", *s] for s in args.service or [[]]]
    folders = []  # the adapter mix's PEFT folders, the same on every side
    if args.vision:
        model = bench_vision.MODEL
        services = [[f"TUNESERVE_BASE_MODELS={json.dumps({model.name: str(model)})}", *s] for s in services]
        kinds = {
            "streamed": lambda _: bench_vision.image_bodies(),
            "streamed, again": lambda _: bench_vision.image_bodies(),
        }
    else:
        model, names = bench_serving.MODEL, [bench_serving.MODEL.name]
        kinds = {"streamed": lambda _: bench_serving.chat_bodies(names, True)}
        if args.mix:
            folders = bench_serving.adapters(Path(tempfile.mkdtemp(prefix="ts-bench-adapters-")))
            kinds["mix"] = lambda adapters: bench_serving.chat_bodies(adapters, True)
        else:
            kinds["plain"] = lambda _: bench_serving.chat_bodies(names, False)
    with contextlib.ExitStack() as running:
        sides: dict[str, Side] = {}
        for i, pairs in enumerate(services):
            url, headers, data_dir = running.enter_context(stack_with(pairs))
            name = f"service {'ABCDEFGH'[i]}"
            models = bench_serving.register_adapters(url, data_dir, folders)
            sides[name] = Side(url, headers, stack_root(data_dir), models)
            print(f"{name}: {' '.join(pairs) or 'defaults'}", flush=True)
        if args.bare:
            first = sides["service A"]
            sides["A, bare"] = Side(first.url, first.headers, first.root, first.models, off_path(first.root))
        if args.serve_llm_direct:
            url, root = running.enter_context(serve_llm_direct_side(model))
            sides["serve llm"] = Side(url, {}, root, [])
        served = {f"a{i}": folder for i, folder in enumerate(folders)}
        url = running.enter_context(vllm_server(model, served, args.engine_cores))
        sides["vllm"] = Side(url, {}, vllm_server_pid(), list(served))
        for side in sides.values():
            running.callback(signal_tree, side.root, signal.SIGCONT)  # however this ends: `down` needs them
        tps = {(side, kind): [] for side in sides for kind in kinds}
        ttft = {side: [] for side in sides}
        order = list(sides)
        for side in order:  # warm-up, each alone (the mix's burst loads the adapters)
            alone(sides, side)
            for bodies in kinds.values():
                chat_burst(sides[side].url, sides[side].headers, bodies(sides[side].models))
        orders = balanced_orders(order)
        for i in range(args.rounds):
            for side in orders[i % len(orders)]:
                alone(sides, side)
                time.sleep(SETTLE_S)
                for kind, bodies in kinds.items():
                    rate, first = burst(sides[side].url, sides[side].headers, bodies(sides[side].models))
                    tps[(side, kind)].append(rate)
                    if kind == "streamed":
                        ttft[side].append(first)
            print(
                f"round {i + 1}: "
                + ", ".join(f"{side} {kind} {v[-1]:.0f}" for (side, kind), v in tps.items()),
                flush=True,
            )
    print_table(tps, ttft, list(kinds), [s for s in sides if s != "vllm"])


@contextlib.contextmanager
def serve_llm_direct_side(model: Path):
    """Ray Serve LLM's leanest deployment in a process of its own (this script, `--hold-serve-llm-direct`),
    so that it can be stopped like the other sides: (its URL, that process's pid)."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "url"
        cmd = [sys.executable, __file__, "--hold-serve-llm-direct", str(ready)]
        proc = subprocess.Popen([*cmd, *(["--vision"] if model == bench_vision.MODEL else [])])
        try:
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError("Ray Serve LLM's direct deployment did not start")
                time.sleep(1)
            yield ready.read_text(), proc.pid
        finally:
            proc.terminate()
            proc.wait(120)


def hold_serve_llm_direct(model: Path, ready: Path) -> None:
    """Ray Serve LLM's direct deployment of `model` until terminated; its URL written to `ready`."""
    stopped = []
    with serve_llm_direct(model) as url:
        # After ray.init, whose own SIGTERM handler exits at once and leaves Ray's agents running.
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(url)
        tmp.rename(ready)
        while not stopped:
            time.sleep(0.5)


def balanced_orders(sides: list[str]) -> list[list[str]]:
    """The orders of the rounds: each side first in turn, and each side right after each other side
    equally often (a Williams design: n orders for an even n, 2n for an odd one). Under a rotated
    order the second of two stacks, which ran right after the first in most rounds, gained ~4 %
    whatever it ran (bench/RESULTS.md, twenty-fourth session)."""
    n = len(sides)
    first = [0]
    for k in range(1, n):  # 0, 1, n-1, 2, n-2, ...
        first.append((k + 1) // 2 if k % 2 else n - k // 2)
    rows = [[(x + i) % n for x in first] for i in range(n)]
    if n % 2:
        rows += [row[::-1] for row in rows]
    return [[sides[x] for x in row] for row in rows]


def alone(sides: dict[str, Side], side: str) -> None:
    """Every side but `side` stopped, `side` running (less its `held` processes)."""
    mine = sides[side]
    for other in sides.values():
        if other.root != mine.root:
            signal_tree(other.root, signal.SIGSTOP)
    signal_tree(mine.root, signal.SIGCONT)
    if mine.held:
        time.sleep(SETTLE_S)  # the timers that fired while the stack was stopped, caught up first
        for pid in mine.held:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)


def off_path(root: int) -> frozenset[int]:
    """The stack's processes a request does not pass through: all but its Serve replicas and their
    children (vLLM's engine)."""
    stack = descendants(root)
    on_path = set()
    for pid in stack:
        if "ServeReplica" in read_proc(f"/proc/{pid}/cmdline"):
            on_path.update(descendants(pid))
    return frozenset(stack) - on_path


def print_table(tps: dict, ttft: dict, kinds: list[str], services: list[str]) -> None:
    """Per service and kind of burst: mean tokens/s, and against vLLM as the median over rounds."""
    print(f"\n{'':<12} {'':<16} {'tokens/s':>9} {'/ vLLM (median of rounds)':>26}")
    for side in ["vllm", *services]:
        for kind in kinds:
            mine, ref = tps[(side, kind)], tps[("vllm", kind)]
            ratio = statistics.median(y / x for x, y in zip(ref, mine, strict=True))
            print(f"{side:<12} {kind:<16} {statistics.mean(mine):>9.0f} {ratio:>26.3f}")
        ratio = statistics.median(y / x for x, y in zip(ttft["vllm"], ttft[side], strict=True))
        ms = statistics.median(ttft[side]) * 1000
        print(f"{side:<12} {'TTFT p50':<16} {ms:>7.0f}ms {ratio:>26.3f}")
    for a, b in itertools.combinations(services, 2):
        for kind in kinds:
            ratio = statistics.median(y / x for x, y in zip(tps[(a, kind)], tps[(b, kind)], strict=True))
            print(f"{b} / {a}, {kind}: {ratio:.3f} (median of rounds)")


if __name__ == "__main__":
    main()
