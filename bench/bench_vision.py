"""Vision-language models: training and serving through the service against the plain tools, back to back.

Training: the test VLM (SmolLM2-135M-LLaVA) on 48 pictures of the colour task (bench/vision_task.py), LoRA
r=8 on every linear layer of the language model (the service's default; the vision tower and projector
frozen), batches of 8, 2 epochs, bf16 where the CPU has it. Baseline: a plain HF `Trainer` + peft script in
one process (2 threads); then a fine-tuning job through the service with its default resources (2 workers
x 1 thread). Steady-state tokens/s (image tokens included), median over steps after the first.

Serving: 16 concurrent chats, each with one picture (a data URL) and the colour question, 32 output tokens
(`ignore_eos`, greedy). vLLM alone (`AsyncLLM` in one process, the service's engine settings) against
Ray Serve LLM's leanest path alone (`bench.common.serve_llm_direct`) and the service over HTTP (Ray Serve
ingress -> Ray Serve LLM -> vLLM). Output tokens/s and time to first token over four bursts after a
warm-up one (each burst's tokens/s in brackets).

    .venv/bin/python bench/bench_vision.py             # both (~15 min on 2 cores)
    .venv/bin/python bench/bench_vision.py --training  # training only
    .venv/bin/python bench/bench_vision.py --serving   # serving only
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import vision_task  # noqa: E402
from bench.common import (  # noqa: E402
    MODELS_DIR,
    chat_burst,
    child,
    percentile,
    plain_trainer,
    run_job,
    serve_llm_direct,
    stack,
    vllm_server,
)

NAME = "SmolLM2-135M-LLaVA"
MODEL = MODELS_DIR / NAME
N_EXAMPLES, BATCH, EPOCHS, CORES = 48, 8, 2, 2
N_CHATS, N_TOKENS = 16, 32
BURSTS = 4  # measured bursts after the warm-up one: a single burst (~2.5 s) is too short on a noisy machine


def dataset_bytes() -> bytes:
    return "".join(json.dumps(e) + "\n" for e in vision_task.training_examples(N_EXAMPLES, seed=0)).encode()


# Training, one configuration per process --------------------------------------------------------------


def run_hf_trainer() -> dict:
    """Baseline: a plain single-process HF Trainer + peft script on the same examples and LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from service.platform.hardware import use_bf16
    from trainers.data_format import parse_jsonl
    from trainers.lora_sft import _collate, language_model_targets
    from trainers.vision import data_url_loader, tokenize_all_vision

    torch.set_num_threads(CORES)
    processor = AutoProcessor.from_pretrained(MODEL)
    examples = tokenize_all_vision(processor, parse_jsonl(dataset_bytes()), data_url_loader(), 1024)
    dtype = torch.bfloat16 if use_bf16() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(MODEL, dtype=dtype)
    targets = language_model_targets(model, ["all-linear"])
    model = get_peft_model(
        model,
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules=targets),
    )
    tokens = [0]
    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def collate(batch):
        out = _collate(batch, pad, pixel_dtype=dtype)
        tokens[0] += int(out["attention_mask"].sum())
        return out

    step_times = plain_trainer(model, examples, collate, BATCH, EPOCHS, 1e-3, dtype == torch.bfloat16)
    return {"tokens_per_second": tokens[0] / len(step_times) / statistics.median(step_times[1:])}


def run_service_training() -> dict:
    """A fine-tuning job through the whole service, its default resources."""
    import httpx

    with stack(ray_num_cpus="4", served_models="", base_models=json.dumps({NAME: str(MODEL)})) as (
        url,
        headers,
        _,
    ):
        base = url + "/v1"
        fid = httpx.post(
            f"{base}/files",
            headers=headers,
            data={"purpose": "fine-tune"},
            files={"file": ("colours.jsonl", dataset_bytes())},
            timeout=120,
        ).json()["id"]
        body = {
            "model": NAME,
            "training_file": fid,
            "seed": 0,
            "hyperparameters": {"n_epochs": EPOCHS, "batch_size": BATCH},
        }
        posted, steps, _ = run_job(base, headers, body)
        tps = [e["data"]["tokens_per_second"] for e in steps]
        return {
            "tokens_per_second": statistics.median(tps[1:]),
            "first_step_s": steps[0]["created_at"] - posted,
        }


# Serving, one configuration per process ----------------------------------------------------------------


def pictures() -> list[str]:
    return [vision_task.data_url(png) for png, _ in vision_task.held_out(N_CHATS, seed=5)]


def summary(bursts: list[tuple[float, list[tuple[float, int]]]]) -> dict:
    """Over the measured bursts (each: wall time, and per chat its TTFT and tokens): tokens/s of all of
    them together, each burst's, and TTFT percentiles over every chat."""
    ttfts = [t for _, res in bursts for t, _ in res]
    return {
        "tokens_per_second": sum(n for _, res in bursts for _, n in res) / sum(w for w, _ in bursts),
        "per_burst": [round(sum(n for _, n in res) / w) for w, res in bursts],
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
    }


def run_vllm() -> dict:
    """vLLM's AsyncLLM in this process with the service's engine settings, images as data URLs."""
    from deploy.llm import cpu_binding_env, llm_config

    os.environ.update(cpu_binding_env("all", os.cpu_count() or 1))
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from service.platform.settings import Settings

    # The service's engine arguments (the object store settings only feed the replicas' environment).
    settings = Settings(s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="-", s3_secret_access_key="-")
    # The engine's own arguments: the tool-call ones are for the OpenAI front end (Ray Serve LLM's there).
    fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    engine_kwargs = {
        k: v for k, v in llm_config(settings, NAME, str(MODEL)).engine_kwargs.items() if k in fields
    }
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=str(MODEL), **engine_kwargs))
    params = SamplingParams(max_tokens=N_TOKENS, ignore_eos=True, temperature=0)

    from PIL import Image
    from transformers import AutoProcessor

    # The prompt as the service's chat route has vLLM render it: the model's chat template, the picture
    # as the model's image placeholder, and the decoded image beside it.
    processor = AutoProcessor.from_pretrained(MODEL)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": vision_task.QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def one(i: int, url: str, tag: str) -> tuple[float, int]:
        image = Image.open(io.BytesIO(vision_task.decode(url))).convert("RGB")  # as vLLM decodes a data URL
        request = {"prompt": prompt, "multi_modal_data": {"image": image}}
        start, first, n = time.perf_counter(), None, 0
        async for out in engine.generate(request, params, f"{tag}-{i}"):
            first = first or time.perf_counter() - start
            n = len(out.outputs[0].token_ids)
        return first, n

    async def burst(tag: str) -> tuple[float, list[tuple[float, int]]]:
        start = time.perf_counter()
        res = await asyncio.gather(*(one(i, url, tag) for i, url in enumerate(pictures())))
        return time.perf_counter() - start, res

    async def main() -> dict:
        await burst("warm")
        return summary([await burst(f"run{b}") for b in range(BURSTS)])

    try:
        return asyncio.run(main())
    finally:
        engine.shutdown()


def image_bodies() -> list[dict]:
    """The 16 chats, each with its picture as a data URL, streamed."""
    return [
        {
            "model": NAME,
            "messages": [vision_task.user_message(picture)],
            "max_tokens": N_TOKENS,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for picture in pictures()
    ]


def image_burst(url: str, headers: dict) -> dict:
    """The chats over HTTP, streamed, `BURSTS` bursts after a warm-up one (a thread per chat:
    `bench.common.chat_burst`, the same thin client as bench_serving)."""
    bodies = image_bodies()
    chat_burst(url, headers, bodies)  # warm-up
    return summary([chat_burst(url, headers, bodies) for _ in range(BURSTS)])


def run_service_serving() -> dict:
    """The whole service serving the VLM, images as data URLs."""
    with stack(base_models=json.dumps({NAME: str(MODEL)})) as (url, headers, _):
        return image_burst(url, headers)


def run_vllm_server() -> dict:
    """vLLM's own OpenAI server alone (`bench.common.vllm_server`) serving the VLM, images as data URLs."""
    with vllm_server(MODEL) as url:
        return image_burst(url, {})


def run_serve_llm_direct() -> dict:
    """Ray Serve LLM's leanest path alone (`bench.common.serve_llm_direct`) serving the VLM."""
    with serve_llm_direct(MODEL) as url:
        return image_burst(url, {})


# The tables --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one")
    parser.add_argument("--training", action="store_true")
    parser.add_argument("--serving", action="store_true")
    args = parser.parse_args()
    runs = {
        "hf": run_hf_trainer,
        "service-training": run_service_training,
        "vllm": run_vllm,
        "vllm-server": run_vllm_server,
        "service-serving": run_service_serving,
        "serve-llm-direct": run_serve_llm_direct,
    }
    if args.one:
        print(json.dumps(runs[args.one]()))
        return
    env = {"OMP_NUM_THREADS": str(CORES)}
    both = not (args.training or args.serving)
    if args.training or both:
        hf = child(__file__, "hf", env=env)
        service = child(__file__, "service-training", env=env)
        print(f"\nVLM LoRA training, {N_EXAMPLES} pictures, batches of {BATCH}, {EPOCHS} epochs")
        print(f"{'configuration':<58} {'tokens/s':>9} {'ratio':>6} {'POST->1st step':>15}")
        for label, res in (
            ("plain HF Trainer + peft (baseline), 1 process x 2 threads", hf),
            ("service job, default (2 workers x 1 thread)", service),
        ):
            first = f"{res['first_step_s']:.0f} s" if "first_step_s" in res else ""
            tps = res["tokens_per_second"]
            print(f"{label:<58} {tps:>9.0f} {tps / hf['tokens_per_second']:>6.2f} {first:>15}")
    if args.serving or both:
        alone = child(__file__, "vllm")
        server = child(__file__, "vllm-server")
        direct = child(__file__, "serve-llm-direct")
        service = child(__file__, "service-serving")
        print(f"\n{N_CHATS} concurrent chats with one picture each x {N_TOKENS} tokens")
        print(f"{'configuration':<58} {'tokens/s':>9} {'ratio':>6} {'TTFT p50':>9} {'TTFT p95':>9}")
        for label, r in (
            ("vLLM alone (baseline)", alone),
            ("vLLM's OpenAI server alone (HTTP)", server),
            ("Ray Serve LLM direct streaming alone (HTTP)", direct),
            ("service (HTTP -> Ray Serve -> vLLM)", service),
        ):
            tps = r["tokens_per_second"]
            ratio = tps / alone["tokens_per_second"]
            p50, p95 = r["ttft_p50"] * 1000, r["ttft_p95"] * 1000
            bursts = " ".join(str(b) for b in r["per_burst"])
            print(f"{label:<58} {tps:>9.0f} {ratio:>6.2f} {p50:>7.0f}ms {p95:>7.0f}ms   ({bursts})")


if __name__ == "__main__":
    main()
