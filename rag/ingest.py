"""Ingestion of one file, as a Ray task (or in a thread for tests): load -> split -> embed what is new.

The task returns plain data (chunks and vectors); the API process adds them to the store's index, so that
one writer changes a store at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from rag.chunking import Chunk, split
from rag.embedder import Embedder
from rag.loaders import load


@dataclass
class Prepared:
    chunks: list[Chunk]
    new_vectors: dict[str, np.ndarray]  # SHA-256 -> vector, for texts the store did not have


@cache
def embedder(path: str | None, dtype: str) -> Embedder:
    """One embedder per process (Ray reuses worker processes across tasks of a function)."""
    return Embedder(Path(path) if path else None, dtype)


def prepare_file(
    filename: str,
    data: bytes,
    max_tokens: int,
    overlap: int,
    known_shas: set[str],
    model_path: str | None = None,
    dtype: str = "auto",
) -> Prepared:
    """Raises rag.loaders.LoadError for files that cannot be read as text."""
    model = embedder(model_path, dtype)
    chunks = split(load(filename, data), model.tokenizer, max_tokens, overlap)
    todo = list(dict.fromkeys(c.sha256 for c in chunks if c.sha256 not in known_shas))
    texts = {c.sha256: c.text for c in chunks}
    vectors = model.embed([texts[sha] for sha in todo])
    return Prepared(chunks, dict(zip(todo, vectors, strict=True)))
