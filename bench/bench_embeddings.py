"""Embeddings: `POST /v1/embeddings` through the service against sentence-transformers alone.

Texts: the retrieval benchmark's chunks (Python's language reference, ~500 characters each,
`bench.bench_rag.corpus`) that fit the model's 256 tokens. Model: all-MiniLM-L6-v2 from its package,
the model the vector stores embed with. Each configuration runs in its own process; the baseline runs
first and last, and the ratios are against the mean of its two runs (this machine drifts by up to 20 %
within an hour).

- sentence-transformers alone: `SentenceTransformer.encode(texts, batch_size=64, normalize_embeddings=True)`
  in float32, its default (baseline), and in bfloat16;
- the service's embedder alone (`rag.embedder.Embedder`: bfloat16 where the CPU has it, batches of 64);
- the service: `tuneserve up` (no chat model served, so that nothing else is on the machine), the official
  `openai` client's `embeddings.create` with 64 texts a request, one client, then four at once.

Also printed: the smallest cosine between the service's vectors and sentence-transformers' float32 ones.

    .venv/bin/python bench/bench_embeddings.py     # ~4 min on 2 cores
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rag import corpus  # noqa: E402
from bench.common import child, stack  # noqa: E402

BATCH = 64  # texts per encode batch and per request
CLIENTS = 4


def fitting_texts() -> list[str]:
    """The chunks the model reads whole: the service answers a longer text with a 400 (where
    sentence-transformers would cut it silently); code-heavy chunks of 500 characters can pass 256 tokens."""
    from transformers import AutoTokenizer

    from rag.embedder import default_model_path

    texts, _ = corpus()
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    return [t for t, ids in zip(texts, tokenizer(texts)["input_ids"], strict=True) if len(ids) <= 256]


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]


def sentence_transformer(dtype: str):
    import torch
    from sentence_transformers import SentenceTransformer

    from rag.embedder import default_model_path

    return SentenceTransformer(str(default_model_path()), device="cpu").to(getattr(torch, dtype)).eval()


def timed(embed: Callable[[list[str]], object], texts: list[str]) -> dict:
    """Texts/s of `embed` called on the texts 64 at a time (as the service's clients send them), and
    called once on all of them (sorted by length inside, so less padding)."""
    embed(texts[:BATCH])  # warm-up
    out = {}
    for name, parts in (("batches", batches(texts)), ("all_at_once", [texts])):
        start = time.perf_counter()
        for part in parts:
            embed(part)
        out[name] = {"texts_per_second": len(texts) / (time.perf_counter() - start)}
    return out


def run_sentence_transformers(dtype: str) -> dict:
    model = sentence_transformer(dtype)
    return timed(lambda t: model.encode(t, batch_size=BATCH, normalize_embeddings=True), fitting_texts())


def run_embedder() -> dict:
    from rag.embedder import Embedder

    embedder = Embedder()
    return {**timed(embedder.embed, fitting_texts()), "dtype": embedder.dtype}


def run_service() -> dict:
    import numpy as np
    import openai

    from rag.embedder import DEFAULT_MODEL_NAME

    texts = fitting_texts()
    with stack(served_models="") as (url, headers, _):
        key = headers["Authorization"].removeprefix("Bearer ")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=600, max_retries=0)

        def embed(chunk: list[str]) -> list[list[float]]:
            return [d.embedding for d in client.embeddings.create(model=DEFAULT_MODEL_NAME, input=chunk).data]

        out = timed(embed, texts)  # one client, as the configurations alone are timed
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            vectors = [v for part in pool.map(embed, batches(texts)) for v in part]
        out["clients"] = {"texts_per_second": len(texts) / (time.perf_counter() - start)}
    reference = sentence_transformer("float32").encode(texts, batch_size=BATCH, normalize_embeddings=True)
    out["min_cosine_vs_float32"] = float(
        (np.asarray(vectors, dtype=np.float32) * reference).sum(axis=1).min()
    )
    return out


RUNS = {"sentence_transformers": run_sentence_transformers, "embedder": run_embedder, "service": run_service}


def main() -> None:
    if sys.argv[1:2] == ["--one"]:  # one configuration in this process (`bench.common.child`)
        name, *args = sys.argv[2:]
        print(json.dumps(RUNS[name](*args)))
        return
    first = child(__file__, "sentence_transformers", "float32")
    rows = {"sentence-transformers alone, bfloat16": child(__file__, "sentence_transformers", "bfloat16")}
    embedder = child(__file__, "embedder")
    rows[f"the service's embedder alone ({embedder['dtype']})"] = embedder
    service = child(__file__, "service")
    rows["the service, official client"] = service
    rows[f"the service, {CLIENTS} clients at once"] = {"batches": service["clients"]}
    last = child(__file__, "sentence_transformers", "float32")
    rows = {
        "sentence-transformers alone, float32 (baseline, first run)": first,
        **rows,
        "sentence-transformers alone, float32 (baseline, last run)": last,
    }
    ref = {
        k: (first[k]["texts_per_second"] + last[k]["texts_per_second"]) / 2
        for k in ("batches", "all_at_once")
    }
    print(
        f"\n{len(fitting_texts())} texts, {BATCH} a call or request, or all in one; ratio = texts/s over the "
        f"baseline's mean ({ref['batches']:.0f} and {ref['all_at_once']:.0f} texts/s)"
    )
    print(f"{'configuration':<60} {BATCH:>6} a call  ratio {'all in one':>11}  ratio")
    for label, r in rows.items():
        cells = []
        for k in ("batches", "all_at_once"):
            tps = r.get(k, {}).get("texts_per_second")
            cells.append(f"{tps:>13.0f} {tps / ref[k]:>6.2f}" if tps else f"{'':>13} {'':>6}")
        print(f"{label:<60}" + "".join(cells))
    print(f"\nsmallest cosine, the service's vectors vs float32's: {service['min_cosine_vs_float32']:.4f}")


if __name__ == "__main__":
    main()
