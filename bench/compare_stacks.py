"""Two stacks up at once, bursts alternating between them: an A/B of settings that sequential runs cannot
resolve on a noisy 2-core machine (its speed drifts by more within an hour than the effects measured).

Each side is a list of environment settings for `tuneserve up` (TUNESERVE_ settings, or Ray's own RAY_
ones, which the stack's Ray head takes from its environment). Both stacks pay for the other's idle cost,
so absolute numbers are lower than a lone stack's; the ratios are the result.

    .venv/bin/python bench/compare_stacks.py --b RAY_num_workers_soft_limit=-1 --rounds 6
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serving import MODEL, http_burst  # noqa: E402
from bench.common import stack  # noqa: E402


def stack_with(pairs: list[str]):  # the context manager of `bench.common.stack`
    """`bench.common.stack` with KEY=VALUE settings: TUNESERVE_ ones as the stack's own, others (Ray's
    RAY_ ones) in the environment `tuneserve up` runs in, which its Ray head inherits."""
    given = dict(p.split("=", 1) for p in pairs)
    ours = {k for k in given if k.startswith("TUNESERVE_")}
    settings = {k.removeprefix("TUNESERVE_").lower(): given[k] for k in ours}
    return stack(extra_env={k: v for k, v in given.items() if k not in ours}, **settings)


def print_ab(tps: dict[tuple[str, bool], list[float]], ttft: dict[str, list[float]]) -> None:
    """The A/B table: mean tokens/s of each side, B/A as the median of the pairs, and TTFT p50."""
    print(f"\n{'':<10} {'A tokens/s':>11} {'B tokens/s':>11} {'B/A (median of pairs)':>22}")
    for stream, label in ((False, "plain"), (True, "streamed")):
        a, b = tps[("A", stream)], tps[("B", stream)]
        pairs = statistics.median(y / x for x, y in zip(a, b, strict=True))
        print(f"{label:<10} {statistics.mean(a):>11.0f} {statistics.mean(b):>11.0f} {pairs:>22.3f}")
    a_ms, b_ms = (statistics.median(ttft[n]) * 1000 for n in ("A", "B"))
    print(f"TTFT p50 (median): A {a_ms:.0f} ms, B {b_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", nargs="*", default=[], help="KEY=VALUE settings of stack A (default: none)")
    parser.add_argument("--b", nargs="*", default=[], help="KEY=VALUE settings of stack B")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    with contextlib.ExitStack() as stacks:
        sides = {
            name: stacks.enter_context(stack_with(pairs)) for name, pairs in (("A", args.a), ("B", args.b))
        }
        for url, headers, _ in sides.values():
            http_burst(url, headers, [MODEL.name], True)  # warm-up
        tps = {(n, s): [] for n in sides for s in (False, True)}
        ttft = {n: [] for n in sides}
        for i in range(args.rounds):
            order = ["A", "B"] if i % 2 == 0 else ["B", "A"]  # neither side always goes first
            for stream in (True, False):
                for name in order:
                    url, headers, _ = sides[name]
                    r = http_burst(url, headers, [MODEL.name], stream)
                    tps[(name, stream)].append(r["tokens_per_second"])
                    if stream:
                        ttft[name].append(r["ttft_p50"])
            print(
                f"round {i + 1}: "
                + ", ".join(f"{n} {'streamed' if s else 'plain'} {v[-1]:.0f}" for (n, s), v in tps.items())
            )
        print_ab(tps, ttft)


if __name__ == "__main__":
    main()
