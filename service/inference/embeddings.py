"""Embeddings: the vector stores' embedder (bf16 where the CPU has it, batched) behind OpenAI's API, so
that clients can embed with exactly the vectors retrieval uses."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rag.embedder import Embedder
from service.platform.errors import ApiError
from service.protocol.embeddings import MAX_INPUTS, Embedding, EmbeddingCreate, EmbeddingList, EmbeddingUsage


@dataclass
class EmbeddingService:
    model_id: str  # the embedding model's public id: its folder's name
    embedder: Callable[[], Embedder]  # the process's embedder, loaded on first use

    def create(self, req: EmbeddingCreate) -> EmbeddingList:
        """The inputs' unit-length vectors, in input order. Blocking (the model): call it off the loop."""
        if req.model != self.model_id:
            raise ApiError(
                404,
                f"The embedding model '{req.model}' does not exist here; this service embeds with "
                f"'{self.model_id}'.",
                param="model",
                code="model_not_found",
            )
        texts = self._texts(req.input)
        embedder = self.embedder()
        if req.dimensions is not None and req.dimensions != embedder.dimension:
            raise ApiError(
                400,
                f"'{self.model_id}' makes vectors of {embedder.dimension} dimensions and cannot shorten "
                f"them; leave out `dimensions` or set it to {embedder.dimension}.",
                param="dimensions",
            )
        counts = [len(ids) for ids in embedder.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        for i, n in enumerate(counts):
            if n > embedder.max_tokens:
                raise ApiError(
                    400,
                    f"input[{i}] is {n} tokens long; '{self.model_id}' reads at most {embedder.max_tokens}. "
                    "Split the text (LangChain's text splitters do) and embed the parts.",
                    param="input",
                    code="context_length_exceeded",
                )
        vectors = embedder.embed(texts)
        return EmbeddingList(
            data=[
                Embedding(index=i, embedding=_encoded(v, req.encoding_format)) for i, v in enumerate(vectors)
            ],
            model=self.model_id,
            usage=EmbeddingUsage(prompt_tokens=sum(counts), total_tokens=sum(counts)),
        )

    @staticmethod
    def _texts(value: str | list) -> list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ApiError(400, "`input` is empty: give a text or a list of texts.", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise ApiError(
                400,
                "`input` must be texts: token arrays are not accepted (this service tokenizes with the "
                "embedding model's own tokenizer). LangChain's OpenAIEmbeddings sends token arrays unless "
                "created with check_embedding_ctx_length=False.",
                param="input",
                code="invalid_type",
            )
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"`input` has {len(texts)} texts; at most {MAX_INPUTS}.", param="input")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ApiError(400, f"input[{i}] is empty.", param="input")
        return texts


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
