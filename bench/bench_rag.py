"""Retrieval: ingestion throughput, recall@5 and search latency.

Corpus: Python's language reference as shipped with Python (`pydoc_data.topics`, 79 topics, ~465k
characters, PSF licence), split into ~500-character chunks with LangChain's RecursiveCharacterTextSplitter.
Questions: QUESTIONS below, each labelled with the topic that answers it (written for this benchmark).

Ingestion (same chunks, same model, back to back, each in its own process):
- baseline: LangChain `FAISS.from_documents(docs, HuggingFaceEmbeddings(<local all-MiniLM-L6-v2>))`, fp32;
- tuneserve's embedder + index (`rag.embedder`, `rag.index`) in float32 and in bfloat16 (the default);
- the service end to end: `POST /v1/files` x 79 + one file batch, until completed (Ray tasks, HTTP).
Search: p50/p95 of `VectorIndex.search` at 10k and 100k chunks (flat, and the IVF used past 50k), and of
a query end to end (embed + search) in-process; recall@5 of exact vs IVF search.

    .venv/bin/python bench/bench_rag.py          # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import child, percentile, stack  # noqa: E402

QUESTIONS = {
    "Which statement is a null operation?": "pass",
    "How do I exit the innermost loop early?": "break",
    "How do I skip to the next iteration of a loop?": "continue",
    "How are debugging assertions inserted into a program?": "assert",
    "How do I delete a variable name?": "del",
    "How does a function return a value to its caller?": "return",
    "How do I raise an exception?": "raise",
    "How do I declare that a name refers to a module-level variable inside a function?": "global",
    "How do I assign to a variable of an enclosing function scope?": "nonlocal",
    "How does the import statement find and load modules?": "import",
    "How does a while loop work?": "while",
    "How do I iterate over the items of a sequence?": "for",
    "How do I handle exceptions with try and except?": "try",
    "What does the with statement do with a context manager?": "with",
    "How do I write an anonymous function?": "lambda",
    "What is a conditional expression like x if c else y?": "if",
    "How do generator functions produce values with yield?": "yield",
    "How do I define a class?": "class",
    "How is a function defined with def?": "function",
    "How is operator precedence determined?": "operator-summary",
    "What are the rules of truth value testing in Python?": "truth",
    "How do comparisons like < and == work between objects?": "comparisons",
    "How does the await expression suspend a coroutine?": "await",
    "What does the match statement do?": "match",
}


def corpus() -> tuple[list[str], list[str]]:
    """(chunk texts, their topic) in order."""
    from pydoc_data.topics import topics

    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=0)
    texts, labels = [], []
    for name, text in topics.items():
        for chunk in splitter.split_text(text):
            texts.append(chunk)
            labels.append(name)
    return texts, labels


def recall_at_5(ranked: list[list[str]]) -> float:
    gold = list(QUESTIONS.values())
    return sum(g in r[:5] for g, r in zip(gold, ranked, strict=True)) / len(gold)


# One configuration per process ----------------------------------------------------------------------


def run_langchain() -> dict:
    from langchain_community.embeddings import HuggingFaceEmbeddings
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document

    from rag.embedder import default_model_path

    texts, labels = corpus()
    docs = [Document(page_content=t, metadata={"topic": lab}) for t, lab in zip(texts, labels, strict=True)]
    emb = HuggingFaceEmbeddings(model_name=str(default_model_path()), model_kwargs={"device": "cpu"})
    emb.embed_documents(texts[:32])  # warm-up
    start = time.perf_counter()
    store = FAISS.from_documents(docs, emb)
    wall = time.perf_counter() - start
    ranked = [[d.metadata["topic"] for d in store.similarity_search(q, k=5)] for q in QUESTIONS]
    return {"chunks_per_second": len(texts) / wall, "recall_at_5": recall_at_5(ranked), "chunks": len(texts)}


def run_tuneserve(dtype: str) -> dict:
    import numpy as np

    from rag.embedder import Embedder
    from rag.index import VectorIndex

    texts, labels = corpus()
    embedder = Embedder(dtype=dtype)
    embedder.embed(texts[:32])  # warm-up
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    index = VectorIndex(embedder.dimension)
    index.add(np.arange(len(texts)), vectors)
    wall = time.perf_counter() - start
    queries = embedder.embed(list(QUESTIONS))
    ranked = [[labels[i] for i, _ in index.search(q, 5)] for q in queries]
    latencies = []
    for q in QUESTIONS:
        t = time.perf_counter()
        index.search(embedder.embed([q])[0], 5)
        latencies.append(time.perf_counter() - t)
    return {
        "chunks_per_second": len(texts) / wall,
        "recall_at_5": recall_at_5(ranked),
        "query_p50_ms": 1000 * percentile(latencies, 0.5),
    }


def run_service() -> dict:
    from pydoc_data.topics import topics

    import httpx

    from rag.collection import OBJECT as COLLECTION_OBJECT
    from rag.collection import Collection

    with stack(served_models="") as (url, headers, data_dir):
        base = url + "/v1"
        ids = [
            httpx.post(
                f"{base}/files",
                headers=headers,
                data={"purpose": "assistants"},
                files={"file": (f"{n}.txt", t.encode())},
                timeout=60,
            ).json()["id"]
            for n, t in topics.items()
        ]
        static = {"max_chunk_size_tokens": 128, "chunk_overlap_tokens": 0}  # ~500 characters
        body = {"chunking_strategy": {"type": "static", "static": static}}
        store = httpx.post(f"{base}/vector_stores", headers=headers, json=body, timeout=60).json()["id"]
        start = time.perf_counter()
        httpx.post(
            f"{base}/vector_stores/{store}/file_batches", headers=headers, json={"file_ids": ids}, timeout=60
        )
        while httpx.get(f"{base}/vector_stores/{store}", headers=headers, timeout=60).json()["file_counts"][
            "in_progress"
        ]:
            time.sleep(0.25)
        wall = time.perf_counter() - start
        # The collection the service wrote (the embedded S3 server keeps objects as plain files).
        stored = data_dir / "objects" / "tuneserve" / "vector_stores" / store / COLLECTION_OBJECT
        n = len(Collection.from_bytes(stored.read_bytes()).chunks)
        ranked, latencies = [], []
        for q in QUESTIONS:
            t = time.perf_counter()
            res = httpx.post(
                f"{base}/vector_stores/{store}/search",
                headers=headers,
                json={"query": q, "max_num_results": 5},
                timeout=60,
            ).json()["data"]
            latencies.append(time.perf_counter() - t)
            ranked.append([r["filename"].removesuffix(".txt") for r in res])
        return {
            "chunks_per_second": n / wall,
            "recall_at_5": recall_at_5(ranked),
            "chunks": n,
            "query_p50_ms": 1000 * percentile(latencies, 0.5),
        }


def run_search() -> dict:
    """Index search latency at 10k and 100k chunks of real-looking vectors (the corpus' embeddings plus
    noise), flat and IVF; recall@5 of the IVF against exact search."""
    import numpy as np

    import rag.index
    from rag.embedder import Embedder
    from rag.index import VectorIndex

    texts, _ = corpus()
    embedder = Embedder()
    seed = embedder.embed(texts)
    rng = np.random.default_rng(0)
    queries = embedder.embed(list(QUESTIONS) * 4)
    out = {}
    for n in (10_000, 100_000):
        base = seed[rng.integers(0, len(seed), n)] + rng.normal(0, 0.05, (n, seed.shape[1])).astype(
            np.float32
        )
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        for kind, limit in (("flat", 10**9), ("ivf", 1)):
            rag.index.FLAT_LIMIT = limit
            index = VectorIndex(seed.shape[1])
            index.add(np.arange(n), base)
            lat = []
            for q in queries:
                t = time.perf_counter()
                index.search(q, 5)
                lat.append(time.perf_counter() - t)
            out[f"{kind}@{n}"] = {
                "p50_ms": 1000 * percentile(lat, 0.5),
                "p95_ms": 1000 * percentile(lat, 0.95),
            }
            if kind == "flat":
                exact = [[i for i, _ in index.search(q, 5)] for q in queries]
            else:
                got = [[i for i, _ in index.search(q, 5)] for q in queries]
                out[f"{kind}@{n}"]["recall_vs_exact"] = statistics.mean(
                    len(set(a) & set(b)) / 5 for a, b in zip(exact, got, strict=True)
                )
    return out


# The tables -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", nargs="+")
    args = parser.parse_args()
    if args.one:
        name, *rest = args.one
        runs = {
            "langchain": run_langchain,
            "tuneserve": lambda: run_tuneserve(rest[0]),
            "service": run_service,
            "search": run_search,
        }
        print(json.dumps(runs[name]()))
        return

    rows = {
        "LangChain FAISS.from_documents + HuggingFaceEmbeddings (fp32, baseline)": child(
            __file__, "langchain"
        ),
        "tuneserve embedder + index, float32": child(__file__, "tuneserve", "float32"),
        "tuneserve embedder + index, bfloat16 (default)": child(__file__, "tuneserve", "bfloat16"),
        "service: 79 files, one file batch, HTTP + Ray tasks (bf16)": child(__file__, "service"),
    }
    ref = rows["LangChain FAISS.from_documents + HuggingFaceEmbeddings (fp32, baseline)"]["chunks_per_second"]
    print(f"\n{'ingestion':<66} {'chunks/s':>9} {'ratio':>6} {'recall@5':>9} {'query p50':>10}")
    for label, r in rows.items():
        q = f"{r['query_p50_ms']:.1f} ms" if "query_p50_ms" in r else ""
        cps = r["chunks_per_second"]
        print(f"{label:<66} {cps:>9.0f} {cps / ref:>6.2f} {r['recall_at_5']:>9.2f} {q:>10}")
    search = child(__file__, "search")
    print(f"\n{'index search (k=5)':<20} {'p50':>8} {'p95':>8} {'recall vs exact':>16}")
    for label, r in search.items():
        rec = f"{r['recall_vs_exact']:.3f}" if "recall_vs_exact" in r else "exact"
        print(f"{label:<20} {r['p50_ms']:>6.2f}ms {r['p95_ms']:>6.2f}ms {rec:>16}")


if __name__ == "__main__":
    main()
