"""Serving throughput and latency: the service against vLLM alone and plain transformers `generate`.

16 concurrent chats x 128 output tokens (`ignore_eos`, greedy), the same 16 prompts everywhere, for the base
model and for a mix of 3 LoRA adapters (r=8 on q/v, requests spread round-robin). Each configuration runs
in its own process, back to back. Prints output tokens/s, p50/p95 time to first token and the ratios.

    .venv/bin/python bench/bench_serving.py            # everything (~12 min on 2 cores)
    .venv/bin/python bench/bench_serving.py --quick    # without transformers and vLLM's 1-core binding

Configurations:
- transformers: one batched `generate` of the 16 prompts (fp32: bf16 generate is slower on this CPU),
  2 threads; the adapter mix uses peft's mixed-batch `adapter_names`. Its TTFT is the batch's prefill.
- vLLM alone: `AsyncLLM` in this process, bf16, the service's engine settings, 16 concurrent requests.
- vLLM's OpenAI server alone: `vllm.entrypoints.openai.api_server`, same settings, over HTTP, streamed
  and not: what a user runs without the service.
- Ray Serve LLM's direct streaming alone: its leanest path (HAProxy -> the LLMServer replica serving vLLM's
  own app), on a bare Ray with the same engine settings, streamed and not: the reference for any Ray
  Serve deployment of this engine.
- the service: `tuneserve up` with defaults, the 16 chats over HTTP (Ray Serve ingress -> Ray Serve LLM ->
  vLLM), streamed and not, the adapter mix, then ten streamed bursts in a row.
Both HTTP configurations use `bench.common.chat_burst` (a thread per chat with the standard library's
client: thin enough not to slow what it measures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    MODELS_DIR,
    chat_burst,
    child,
    percentile,
    serve_llm_direct,
    stack,
    vllm_server,
)

MODEL = MODELS_DIR / "SmolLM2-135M-Instruct"
N_CHATS, N_TOKENS, N_ADAPTERS, CORES = 16, 128, 3, 2
TOPICS = ["rivers", "volcanoes", "bread", "chess", "comets", "bees", "glaciers", "violins"]


def questions() -> list[str]:
    return [f"Tell me about {TOPICS[i % 8]} (question {i}); be detailed." for i in range(N_CHATS)]


def adapters(tmp: Path) -> list[Path]:
    from tests.integration.helpers import make_adapter

    return [make_adapter(tmp / f"adapter{i}", seed=i) for i in range(N_ADAPTERS)]


def register_adapters(url: str, data_dir: Path, folders: list[Path]) -> list[str]:
    """The adapters in `folders` registered on the stack at `url` (data dir `data_dir`): their model ids."""
    from tests.integration.helpers import RunningStack, register_adapter

    running = RunningStack(data_dir, int(url.rsplit(":", 1)[1]), {})
    return [register_adapter(running, folder, f"bench{i}") for i, folder in enumerate(folders)]


def summary(wall: float, tokens: int, ttfts: list[float]) -> dict:
    return {
        "tokens_per_second": tokens / wall,
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
    }


# One configuration per process ----------------------------------------------------------------------


def run_transformers(mix: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(CORES)
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    kwargs = {}
    if mix:
        from peft import PeftModel

        paths = adapters(Path(tempfile.mkdtemp()))
        model = PeftModel.from_pretrained(model, paths[0], adapter_name="a0")
        for i, p in enumerate(paths[1:], 1):
            model.load_adapter(p, adapter_name=f"a{i}")
        kwargs["adapter_names"] = [f"a{i % N_ADAPTERS}" for i in range(N_CHATS)]
    chats = [[{"role": "user", "content": q}] for q in questions()]
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    batch = tok(texts, return_tensors="pt", padding=True)
    gen = {"do_sample": False, "pad_token_id": tok.pad_token_id or tok.eos_token_id, **kwargs}
    with torch.no_grad():
        model.generate(**batch, max_new_tokens=4, **gen)  # warm-up
        start = time.perf_counter()
        model.generate(**batch, max_new_tokens=1, **gen)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=N_TOKENS, min_new_tokens=N_TOKENS, **gen)
        wall = time.perf_counter() - start
    tokens = (out.shape[1] - batch["input_ids"].shape[1]) * N_CHATS
    return summary(wall, tokens, [ttft] * N_CHATS)


def run_vllm(threads: str) -> list[dict]:
    """vLLM's AsyncLLM in this process with the service's engine settings; base, then the adapter mix."""
    from deploy.llm import CPU_WORKER_CLASS, cpu_binding_env

    os.environ.update(cpu_binding_env(threads, os.cpu_count() or 1))
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM

    from service.platform.settings import Settings

    s = Settings()
    engine = AsyncLLM.from_engine_args(
        AsyncEngineArgs(
            model=str(MODEL),
            dtype="bfloat16",
            enable_lora=True,
            max_loras=s.serving_max_loras,
            max_lora_rank=s.serving_max_lora_rank,
            max_num_seqs=s.serving_max_concurrent_requests,
            max_model_len=s.serving_max_model_len,
            kv_cache_memory_bytes=1024**3,
            enable_prefix_caching=True,
            worker_cls=CPU_WORKER_CLASS,  # the service's (quieter threads), as every baseline here runs
        )
    )
    tok = engine.tokenizer
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions()
    ]
    loras = [LoRARequest(f"a{i}", i + 1, str(p)) for i, p in enumerate(adapters(Path(tempfile.mkdtemp())))]
    params = SamplingParams(max_tokens=N_TOKENS, ignore_eos=True, temperature=0)

    async def one(i: int, prompt: str, lora: LoRARequest | None, tag: str) -> tuple[float, int]:
        start, first, n = time.perf_counter(), None, 0
        async for out in engine.generate(prompt, params, f"{tag}-{i}", lora_request=lora):
            first = first or time.perf_counter() - start
            n = len(out.outputs[0].token_ids)
        return first, n

    async def burst(mix: bool, tag: str) -> dict:
        start = time.perf_counter()
        res = await asyncio.gather(
            *(one(i, p, loras[i % N_ADAPTERS] if mix else None, tag) for i, p in enumerate(prompts))
        )
        return summary(time.perf_counter() - start, sum(n for _, n in res), [t for t, _ in res])

    async def main() -> list[dict]:
        await burst(False, "warm")
        await burst(True, "warm-mix")  # loads the adapters
        return [await burst(False, "base"), await burst(True, "mix")]

    try:
        return asyncio.run(main())
    finally:
        engine.shutdown()


def chat_bodies(models: list[str], stream: bool) -> list[dict]:
    """The 16 chats, spread round-robin over `models`."""
    bodies = []
    for i, question in enumerate(questions()):
        body = {
            "model": models[i % len(models)],
            "messages": [{"role": "user", "content": question}],
            "max_tokens": N_TOKENS,
            "ignore_eos": True,
            "temperature": 0,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        bodies.append(body)
    return bodies


def http_burst(url: str, headers: dict, models: list[str], stream: bool) -> dict:
    wall, res = chat_burst(url, headers, chat_bodies(models, stream))
    return summary(wall, sum(n for _, n in res), [t for t, _ in res])


def run_vllm_server() -> dict:
    """vLLM's own OpenAI server alone (`bench.common.vllm_server`), over HTTP with the same client."""
    with vllm_server(MODEL) as url:
        http_burst(url, {}, [MODEL.name], True)  # warm-up
        return {
            "stream": http_burst(url, {}, [MODEL.name], True),
            "plain": http_burst(url, {}, [MODEL.name], False),
        }


def run_serve_llm_direct() -> dict:
    """Ray Serve LLM's leanest path alone (`bench.common.serve_llm_direct`), streamed and not."""
    with serve_llm_direct(MODEL) as url:
        http_burst(url, {}, [MODEL.name], True)  # warm-up
        return {
            "stream": http_burst(url, {}, [MODEL.name], True),
            "plain": http_burst(url, {}, [MODEL.name], False),
        }


def run_service(messages_per_s: str = "") -> dict:
    """The full service on a fresh data dir, over HTTP: base streamed and not, the adapter mix, then ten
    streamed bursts in a row (they must not get slower). With `messages_per_s`, that stream budget and
    only the base model, streamed."""
    settings = {"serving_stream_messages_per_s": messages_per_s} if messages_per_s else {}
    with stack(**settings) as (url, headers, data_dir):
        http_burst(url, headers, [MODEL.name], True)  # warm-up
        if messages_per_s:
            return {"stream": http_burst(url, headers, [MODEL.name], True)}
        models = register_adapters(url, data_dir, adapters(data_dir / "tmp"))
        http_burst(url, headers, models, True)  # loads the adapters
        result = {
            "stream": http_burst(url, headers, [MODEL.name], True),
            "plain": http_burst(url, headers, [MODEL.name], False),
            "mix": http_burst(url, headers, models, True),
        }
        result["bursts"] = [http_burst(url, headers, [MODEL.name], True) for _ in range(10)]
        return result


# The table --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="+")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.one:
        name, *rest = args.one
        runs = {
            "transformers": lambda: run_transformers(rest == ["mix"]),
            "vllm": lambda: run_vllm(rest[0]),
            "service": lambda: run_service(*rest),
            "vllm_server": run_vllm_server,
            "serve_llm_direct": run_serve_llm_direct,
        }
        print(json.dumps(runs[name]()))
        return

    rows: dict[str, dict] = {}
    if not args.quick:
        rows["transformers generate, base"] = child(__file__, "transformers", "base")
        rows["transformers generate + peft, 3-adapter mix"] = child(__file__, "transformers", "mix")
        base, mix = child(__file__, "vllm", "auto")
        rows["vLLM alone, vLLM's default binding (1 core), base"] = base
        rows["vLLM alone, vLLM's default binding (1 core), 3-adapter mix"] = mix
    base, mix = child(__file__, "vllm", "all")
    rows["vLLM alone, both cores (service default), base"] = base
    rows["vLLM alone, both cores (service default), 3-adapter mix"] = mix
    if not args.quick:  # vLLM's own CPU LoRA ops instead of deploy/lora_cpu_ops.py
        _, mix = child(__file__, "vllm", "all", env={"VLLM_PLUGINS": "lora_filesystem_resolver"})
        rows["vLLM alone, both cores, 3-adapter mix, vLLM's own LoRA ops"] = mix
    server = child(__file__, "vllm_server")
    rows["vLLM's OpenAI server alone (HTTP), base, streamed"] = server["stream"]
    rows["vLLM's OpenAI server alone (HTTP), base, not streamed"] = server["plain"]
    direct = child(__file__, "serve_llm_direct")
    rows["Ray Serve LLM direct streaming alone (HTTP), base, streamed"] = direct["stream"]
    rows["Ray Serve LLM direct streaming alone (HTTP), base, not streamed"] = direct["plain"]
    service = child(__file__, "service")
    rows["service (HTTP -> Ray Serve -> vLLM), base, streamed"] = service["stream"]
    rows["service, base, not streamed"] = service["plain"]
    rows["service, 3-adapter mix, streamed"] = service["mix"]
    # What coalescing a stream's chunks bought (deploy/streaming.py): every token its own message.
    rows["service, base, streamed, every token its own message"] = child(__file__, "service", "0")["stream"]

    ref = rows["vLLM alone, both cores (service default), base"]["tokens_per_second"]
    print(
        f"\n{N_CHATS} concurrent chats x {N_TOKENS} tokens; ratio = tokens/s / vLLM alone (both cores, base)"
    )
    print(f"{'configuration':<62} {'tokens/s':>9} {'ratio':>6} {'TTFT p50':>9} {'TTFT p95':>9}")
    for label, r in rows.items():
        tps = r["tokens_per_second"]
        p50, p95 = r["ttft_p50"] * 1000, r["ttft_p95"] * 1000
        print(f"{label:<62} {tps:>9.0f} {tps / ref:>6.2f} {p50:>7.0f}ms {p95:>7.0f}ms")
    print("\nThe service, ten streamed bursts of the base model in a row:")
    for i, r in enumerate(service["bursts"], 1):
        tps = r["tokens_per_second"]
        ttft = r["ttft_p50"] * 1000
        print(f"  burst {i:>2}: {tps:>5.0f} tokens/s ({tps / ref:.2f}), TTFT p50 {ttft:.0f} ms")


if __name__ == "__main__":
    main()
