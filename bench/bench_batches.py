"""The Batch API against the same requests sent over HTTP, on one stack: what answering in the background
costs, and what a batch leaves to interactive traffic.

64 chats x 64 tokens (`ignore_eos`, greedy; bench_serving.py's questions, repeated). Three ways, on one
stack (`tuneserve up`, SmolLM2 only), the order rotated every round (this machine drifts within an hour):
  http-8    the chats over HTTP, 8 at a time (the batch's default `TUNESERVE_BATCH_REQUESTS_IN_FLIGHT`)
  batch     one batch of them: upload, create, poll every 0.2 s until completed, read the output file
  http-64   all 64 at once over HTTP (what a client without batches would do)
tokens/s = completion tokens / wall time (the batch's from upload to output read). Ratio: over http-8, the
median of the rounds' pairs.

`--interactive 8 32`: for each `TUNESERVE_BATCH_REQUESTS_IN_FLIGHT` given, a stack of its own: one user's
streamed chats (32 tokens, one after another) on the idle engine, then while a batch of 128 x 64 tokens
runs; their time to first token and decode rate, and the batch's tokens/s.

    .venv/bin/python bench/bench_batches.py [--rounds 3]     # ~6 min on 2 cores
    .venv/bin/python bench/bench_batches.py --interactive 8 32     # ~8 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_serving import questions  # noqa: E402
from bench.common import stack  # noqa: E402
from service.platform.settings import DEFAULT_BASE_MODEL  # noqa: E402

N_REQUESTS, N_TOKENS, IN_FLIGHT = 64, 64, 8


def bodies() -> list[dict]:
    asked = questions()
    return [
        {
            "model": DEFAULT_BASE_MODEL,
            "messages": [{"role": "user", "content": asked[i % len(asked)]}],
            "max_tokens": N_TOKENS,
            "ignore_eos": True,
            "temperature": 0,
        }
        for i in range(N_REQUESTS)
    ]


def over_http(url: str, headers: dict, at_once: int) -> tuple[float, int]:
    """(wall seconds, completion tokens) of every chat, `at_once` in flight."""
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:

        def one(body: dict) -> int:
            resp = client.post("/v1/chat/completions", json=body)
            resp.raise_for_status()
            return resp.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        with ThreadPoolExecutor(at_once) as pool:
            tokens = sum(pool.map(one, bodies()))
        return time.perf_counter() - start, tokens


def as_batch(url: str, headers: dict) -> tuple[float, int]:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        for i, body in enumerate(bodies())
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
        start = time.perf_counter()
        file = client.post("/v1/files", files={"file": ("b.jsonl", data)}, data={"purpose": "batch"}).json()
        body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        batch = client.post("/v1/batches", json=body).json()
        while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.2)
            batch = client.get(f"/v1/batches/{batch['id']}").json()
        assert batch["status"] == "completed" and batch["request_counts"]["failed"] == 0, batch
        output = client.get(f"/v1/files/{batch['output_file_id']}/content").text
        wall = time.perf_counter() - start
    tokens = sum(
        json.loads(line)["response"]["body"]["usage"]["completion_tokens"] for line in output.splitlines()
    )
    return wall, tokens


def interactive_chat(client: httpx.Client) -> tuple[float, float]:
    """One streamed chat of 32 tokens: (time to first token, decode tokens/s after it)."""
    body = {
        "model": DEFAULT_BASE_MODEL,
        "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
        "max_tokens": 32,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    start, first, tokens = time.perf_counter(), None, 0
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {") and json.loads(line[6:])["choices"]:
                first = first or time.perf_counter()
                tokens += 1
    end = time.perf_counter()
    return first - start, (tokens - 1) / max(end - first, 1e-9)


def beside_a_batch(in_flight: int) -> dict:
    with stack(batch_requests_in_flight=str(in_flight)) as (url, headers, _):
        over_http(url, headers, IN_FLIGHT)  # warm the engine
        with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            idle = [interactive_chat(client) for _ in range(8)]
            lines = [
                {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                for i, body in enumerate(bodies() * 2)
            ]
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            start = time.perf_counter()
            file = client.post("/v1/files", files={"file": ("b.jsonl", data)}, data={"purpose": "batch"})
            create = {"input_file_id": file.json()["id"], "endpoint": "/v1/chat/completions"}
            batch = client.post("/v1/batches", json={**create, "completion_window": "24h"}).json()
            busy = []
            while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
                busy.append(interactive_chat(client))
                batch = client.get(f"/v1/batches/{batch['id']}").json()
            wall = time.perf_counter() - start
    return {
        "in_flight": in_flight,
        "batch_tokens_per_second": batch["usage"]["output_tokens"] / wall,
        "idle": (statistics.median(t for t, _ in idle), statistics.median(r for _, r in idle)),
        "busy": (statistics.median(t for t, _ in busy), statistics.median(r for _, r in busy)),
        "chats": len(busy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interactive", type=int, nargs="*", metavar="IN_FLIGHT")
    args = parser.parse_args()
    if args.interactive:
        print(
            "| batch requests in flight | batch tokens/s | chat TTFT p50 idle / beside "
            "| chat decode tokens/s idle / beside | chats |"
        )
        print("|---:|---:|---:|---:|---:|")
        for n in args.interactive:
            r = beside_a_batch(n)
            print(
                f"| {n} | {r['batch_tokens_per_second']:.0f} | {r['idle'][0] * 1000:.0f} / "
                f"{r['busy'][0] * 1000:.0f} ms | {r['idle'][1]:.1f} / {r['busy'][1]:.1f} | {r['chats']} |",
                flush=True,
            )
        return
    ways = {
        "http-8": lambda url, h: over_http(url, h, IN_FLIGHT),
        "batch": as_batch,
        "http-64": lambda url, h: over_http(url, h, N_REQUESTS),
    }
    rates: dict[str, list[float]] = {name: [] for name in ways}
    with stack() as (url, headers, _):
        over_http(url, headers, IN_FLIGHT)  # warm the engine
        as_batch(url, headers)
        for r in range(args.rounds):
            names = list(ways)
            names = names[r % len(names) :] + names[: r % len(names)]
            for name in names:
                wall, tokens = ways[name](url, headers)
                assert tokens == N_REQUESTS * N_TOKENS, (name, tokens)
                rates[name].append(tokens / wall)
                print(f"round {r + 1} {name}: {tokens / wall:.0f} tokens/s", file=sys.stderr, flush=True)
    print("| way | tokens/s (median) | rounds | ratio to http-8 |")
    print("|---|---:|---|---:|")
    for name, values in rates.items():
        ratio = statistics.median(v / b for v, b in zip(values, rates["http-8"], strict=True))
        rounds = " ".join(f"{v:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values):.0f} | {rounds} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
