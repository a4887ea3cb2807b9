"""How many engines and training workers a load needs, and which limit it meets first. Pure arithmetic
from a model's config.json (exact KV-cache and adapter-slot sizes) and measured speeds (bench/RESULTS.md).

    python -m deploy.capacity data/models/SmolLM2-135M-Instruct --adapters 1000 --chats 200 --jobs 20

Adapters in use at once: with A adapters equally popular and C chats in flight, each chat on one of them,
the expected number of distinct adapters among the C is A * (1 - (1 - 1/A) ** C). Every one of those needs
a slot (TUNESERVE_SERVING_MAX_LORAS per engine) while its chat runs; a request for an adapter without a slot
waits for one. That is an upper bound for skewed popularity, where a few adapters take most chats.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# Measured on the 2-core CPU developer machines (bench/RESULTS.md, SmolLM2-135M): what one engine decodes
# for all its chats together, and one training worker's tokens/s. Pass your own for other hardware.
CPU_ENGINE_TOKENS_PER_S = 230.0
CPU_WORKER_TRAIN_TOKENS_PER_S = 100.0


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    params: int  # approximate: weights of attention, MLP and embeddings

    @classmethod
    def from_config(cls, config: dict) -> ModelShape:
        text = config.get("text_config", config)  # a vision-language model's language model
        hidden, layers = text["hidden_size"], text["num_hidden_layers"]
        heads = text["num_attention_heads"]
        head_dim = text.get("head_dim") or hidden // heads
        kv_heads = text.get("num_key_value_heads", heads)
        intermediate = text["intermediate_size"]
        attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
        mlp = 3 * hidden * intermediate
        embeddings = text["vocab_size"] * hidden * (1 if text.get("tie_word_embeddings") else 2)
        return cls(layers, hidden, intermediate, kv_heads, head_dim, layers * (attention + mlp) + embeddings)

    @classmethod
    def from_folder(cls, folder: Path) -> ModelShape:
        return cls.from_config(json.loads((Path(folder) / "config.json").read_text()))

    def kv_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """Keys and values of every layer for one token: what each token of a running chat holds."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def lora_slot_bytes(self, rank: int = 16, dtype: str = "bfloat16") -> int:
        """One adapter slot of the engine: vLLM sizes every slot for the largest rank and every module
        (q, k, v, o, gate, up, down), whatever an adapter uses."""
        q_out, kv_out = self.hidden, self.kv_heads * self.head_dim
        pairs = [
            (self.hidden, q_out),
            (self.hidden, kv_out),
            (self.hidden, kv_out),
            (q_out, self.hidden),
            (self.hidden, self.intermediate),
            (self.hidden, self.intermediate),
            (self.intermediate, self.hidden),
        ]
        return self.layers * sum(rank * (i + o) for i, o in pairs) * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Load:
    adapters: int  # fine-tuned models that get traffic, equally popular
    chats: int  # chats in flight at once
    jobs: int  # fine-tuning jobs running at once
    tokens_per_chat: int = 2048  # prompt + answer held in the KV cache while a chat runs
    decode_tokens_per_s_per_chat: float = 10.0  # what a reader needs of a streamed answer


@dataclass(frozen=True)
class Engine:
    """One vLLM replica and what it is given (the TUNESERVE_SERVING_* settings) and does (measured)."""

    kv_cache_gib: float = 1.0
    max_loras: int = 4
    max_concurrent: int = 64
    tokens_per_s: float = CPU_ENGINE_TOKENS_PER_S
    lora_rank: int = 16
    dtype: str = "bfloat16"


def adapters_in_use(adapters: int, chats: int) -> float:
    """Expected distinct adapters among `chats` chats, each on one of `adapters` equally popular ones."""
    if adapters <= 0 or chats <= 0:
        return 0.0
    return adapters * (1 - (1 - 1 / adapters) ** chats)


@dataclass(frozen=True)
class Plan:
    engines_for: dict[str, int]  # limit -> engines that limit alone asks for
    training_workers: int
    kv_bytes_per_token: int
    lora_slot_bytes: int
    adapters_in_use: float

    @property
    def engines(self) -> int:
        return max(self.engines_for.values())

    @property
    def bottleneck(self) -> str:
        return max(self.engines_for, key=lambda k: self.engines_for[k])


def plan(
    shape: ModelShape,
    load: Load,
    engine: Engine = Engine(),
    workers_per_job: int = 2,
) -> Plan:
    """Engines each limit needs for the load (KV cache, concurrent sequences, adapter slots, tokens/s); the
    largest is the first bottleneck. Training: workers for the jobs, `workers_per_job` each."""
    kv_token = shape.kv_bytes_per_token(engine.dtype)
    tokens_in_cache = engine.kv_cache_gib * 1024**3 // kv_token
    chats_per_engine_kv = max(1, tokens_in_cache // load.tokens_per_chat)
    in_use = adapters_in_use(load.adapters, load.chats)
    engines_for = {
        "KV cache": math.ceil(load.chats / chats_per_engine_kv),
        "concurrent sequences": math.ceil(load.chats / engine.max_concurrent),
        "adapter slots": math.ceil(in_use / engine.max_loras),
        "decode tokens/s": math.ceil(load.chats * load.decode_tokens_per_s_per_chat / engine.tokens_per_s),
    }
    return Plan(
        engines_for=engines_for,
        training_workers=load.jobs * workers_per_job,
        kv_bytes_per_token=kv_token,
        lora_slot_bytes=shape.lora_slot_bytes(engine.lora_rank, engine.dtype),
        adapters_in_use=in_use,
    )


def report(shape: ModelShape, load: Load, engine: Engine, result: Plan) -> str:
    lines = [
        f"model: {shape.params / 1e6:.0f}M parameters, {shape.layers} layers, {shape.kv_heads} KV heads",
        f"KV cache per token: {result.kv_bytes_per_token:,} bytes ({engine.dtype}); "
        f"one adapter slot (rank {engine.lora_rank}): {result.lora_slot_bytes / 1024**2:.1f} MiB",
        f"load: {load.adapters} adapters, {load.chats} chats in flight (~{result.adapters_in_use:.0f} "
        f"adapters in use at once), {load.jobs} jobs",
        "engines each limit needs:",
        *(f"  {name:<22} {n}" for name, n in result.engines_for.items()),
        f"first bottleneck: {result.bottleneck} ({result.engines} engines); "
        f"training: {result.training_workers} workers",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a model folder (its config.json)")
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--max-loras", type=int, default=4)
    parser.add_argument("--engine-tokens-per-s", type=float, default=CPU_ENGINE_TOKENS_PER_S)
    args = parser.parse_args(argv)
    shape = ModelShape.from_folder(args.model)
    load = Load(args.adapters, args.chats, args.jobs)
    engine = Engine(
        kv_cache_gib=args.kv_cache_gib, max_loras=args.max_loras, tokens_per_s=args.engine_tokens_per_s
    )
    print(report(shape, load, engine, plan(shape, load, engine)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
