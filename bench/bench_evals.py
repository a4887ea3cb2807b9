"""Evaluation throughput: a run of the service (Ray tasks, bounded concurrency) against a script that asks
the same API item by item, and one that asks it with 16 threads, grading with the same graders.

Two suites on the base model: `world-capitals` (40 chats, up to 16 tokens each, two string graders) and
`easy-choices` (20 items, 60 log-likelihood requests, no sampling). One stack (bf16, the defaults); the
configurations run back to back, twice, alternating. Prints items/s and the ratio to the sequential script.

    .venv/bin/python bench/bench_evals.py        # ~5 min on 2 cores
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import MODELS_DIR, stack  # noqa: E402

BASE = "SmolLM2-135M-Instruct"
SUITES = ["world-capitals", "easy-choices"]
ROUNDS = 2


def script(url: str, key: str, suite_name: str, threads: int) -> float:
    """What a user's own script does: each item through the API, graded locally; returns seconds."""
    from evals import suites
    from evals.client import ApiScorer
    from evals.graders import GRADERS
    from evals.runner import RunSpec, evaluate_item

    suite = suites.load(suite_name)
    spec = RunSpec(
        api_url=url,
        api_key=key,
        model=BASE,
        tokenizer_path=str(MODELS_DIR / BASE),
        testing_criteria=suite.testing_criteria,
        input_messages=suite.input_messages,
        sampling_params=suite.sampling_params,
    )
    graders = GRADERS.validate_python(suite.testing_criteria)
    scorer = ApiScorer(url, key, BASE, spec.tokenizer_path)
    rows = list(enumerate(suite.items()))
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda r: evaluate_item(spec, graders, scorer, *r), rows))
    elapsed = time.perf_counter() - start
    assert all(r["status"] != "error" for r in results)
    return elapsed


def service_run(url: str, headers: dict, suite_name: str) -> float:
    import httpx

    ev = httpx.post(f"{url}/v1/evals", json={"suite": suite_name}, headers=headers).json()
    start = time.perf_counter()
    body = {"data_source": {"type": "completions", "model": BASE}}
    run = httpx.post(f"{url}/v1/evals/{ev['id']}/runs", json=body, headers=headers, timeout=60).json()
    while run["status"] in ("queued", "in_progress"):
        time.sleep(0.1)
        run = httpx.get(f"{url}/v1/evals/{ev['id']}/runs/{run['id']}", headers=headers).json()
    elapsed = time.perf_counter() - start
    assert run["status"] == "completed" and run["result_counts"]["errored"] == 0, run
    return elapsed


def main() -> None:
    from evals import suites

    times: dict[tuple[str, str], list[float]] = {}
    with stack() as (url, headers, _):
        key = headers["Authorization"].split()[1]
        script(url, key, "easy-choices", 4)  # warm-up: the engine's first requests compile
        for _ in range(ROUNDS):
            for suite in SUITES:
                for name, fn in [
                    ("script, 1 at a time", lambda s=suite: script(url, key, s, 1)),
                    ("script, 16 threads", lambda s=suite: script(url, key, s, 16)),
                    ("service run", lambda s=suite: service_run(url, headers, s)),
                ]:
                    times.setdefault((suite, name), []).append(fn())
    print(f"{'suite':16} {'configuration':22} {'items/s':>8} {'x sequential':>13}")
    for suite in SUITES:
        n = len(suites.load(suite).items())
        base = min(times[suite, "script, 1 at a time"])
        for (s, name), values in times.items():
            if s == suite:
                best = min(values)
                print(f"{suite:16} {name:22} {n / best:8.2f} {base / best:12.2f}x")


if __name__ == "__main__":
    main()
