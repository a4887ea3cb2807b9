"""Serving throughput and latency: the service against vLLM alone and plain transformers `generate`.

16 concurrent chats x 128 output tokens (`ignore_eos`, greedy), the same 16 prompts everywhere, for the base
model and for a mix of 3 LoRA adapters (r=8 on q/v, requests spread round-robin). Each configuration runs
in its own process, back to back. Prints output tokens/s, p50/p95 time to first token and the ratios.

    .venv/bin/python bench/bench_serving.py            # everything (~8 min on 2 cores)
    .venv/bin/python bench/bench_serving.py --quick    # vLLM alone and the service, base model only

Configurations:
- transformers: one batched `generate` of the 16 prompts (fp32: bf16 generate is slower on this CPU),
  2 threads; the adapter mix uses peft's mixed-batch `adapter_names`. Its TTFT is the batch's prefill.
- vLLM alone: `AsyncLLM` in this process, bf16, the service's engine settings, 16 concurrent requests.
- the service: `tuneserve up` with defaults, 16 concurrent streaming chats over HTTP with the openai
  protocol (Ray Serve ingress -> Ray Serve LLM -> vLLM).
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

from bench.common import MODELS_DIR, child, percentile, stack, stream_chat  # noqa: E402

MODEL = MODELS_DIR / "SmolLM2-135M-Instruct"
N_CHATS, N_TOKENS, N_ADAPTERS, CORES = 16, 128, 3, 2
TOPICS = ["rivers", "volcanoes", "bread", "chess", "comets", "bees", "glaciers", "violins"]


def questions() -> list[str]:
    return [f"Tell me about {TOPICS[i % 8]} (question {i}); be detailed." for i in range(N_CHATS)]


def adapters(tmp: Path) -> list[Path]:
    from tests.integration.helpers import make_adapter

    return [make_adapter(tmp / f"adapter{i}", seed=i) for i in range(N_ADAPTERS)]


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
    from deploy.llm import cpu_binding_env

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


def run_service() -> list[dict]:
    """The full service on a fresh data dir: base, then the adapter mix, over HTTP."""
    import httpx

    from tests.integration.helpers import RunningStack, register_adapter

    with stack() as (url, headers, data_dir):
        running = RunningStack(data_dir, int(url.rsplit(":", 1)[1]), {})
        paths = adapters(data_dir / "tmp")
        models = [register_adapter(running, p, f"bench{i}") for i, p in enumerate(paths)]

        async def one(client: httpx.AsyncClient, i: int, model: str) -> tuple[float, int]:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": questions()[i]}],
                "max_tokens": N_TOKENS,
                "ignore_eos": True,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            return await stream_chat(client, body, headers)

        async def burst(mix: bool) -> dict:
            async with httpx.AsyncClient(base_url=url, timeout=600) as client:
                start = time.perf_counter()
                res = await asyncio.gather(
                    *(one(client, i, models[i % N_ADAPTERS] if mix else MODEL.name) for i in range(N_CHATS))
                )
            return summary(time.perf_counter() - start, sum(n for _, n in res), [t for t, _ in res])

        async def main() -> list[dict]:
            await burst(False)
            await burst(True)  # loads the adapters
            return [await burst(False), await burst(True)]

        return asyncio.run(main())


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
            "service": run_service,
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
    base, mix = child(__file__, "service")
    rows["service (HTTP -> Ray Serve -> vLLM), base"] = base
    rows["service (HTTP -> Ray Serve -> vLLM), 3-adapter mix"] = mix

    ref = rows["vLLM alone, both cores (service default), base"]["tokens_per_second"]
    print(
        f"\n{N_CHATS} concurrent chats x {N_TOKENS} tokens; ratio = tokens/s / vLLM alone (both cores, base)"
    )
    print(f"{'configuration':<62} {'tokens/s':>9} {'ratio':>6} {'TTFT p50':>9} {'TTFT p95':>9}")
    for label, r in rows.items():
        tps = r["tokens_per_second"]
        p50, p95 = r["ttft_p50"] * 1000, r["ttft_p95"] * 1000
        print(f"{label:<62} {tps:>9.0f} {tps / ref:>6.2f} {p50:>7.0f}ms {p95:>7.0f}ms")


if __name__ == "__main__":
    main()
