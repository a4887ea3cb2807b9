"""OpenAI's embeddings API: POST /v1/embeddings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MAX_INPUTS = 2048  # OpenAI's limit on the inputs of one request


class EmbeddingCreate(BaseModel):
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token arrays are not accepted: the service's tokenizer is "
        "the embedding model's, not tiktoken's)."
    )
    model: str = Field(description="The embedding model's id: the one vector stores use.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: little-endian float32 bytes, as the official client asks for."
    )
    dimensions: int | None = Field(None, ge=1, description="Only the model's own dimension is supported.")
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
