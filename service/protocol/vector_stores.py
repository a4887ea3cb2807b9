"""OpenAI's vector store shapes: stores, their files and file batches, search, and chat retrieval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.protocol.common import Metadata

# all-MiniLM-L6-v2 reads 256 tokens of a text: the default chunk fits it whole.
DEFAULT_MAX_CHUNK_TOKENS = 256
DEFAULT_CHUNK_OVERLAP_TOKENS = 64

Attributes = dict[str, str | int | float | bool]


def check_attributes(value: Attributes | None) -> Attributes | None:
    """OpenAI's limits: at most 16 keys of up to 64 characters, string values up to 512 characters."""
    if value is None:
        return value
    if len(value) > 16:
        raise ValueError("at most 16 attributes")
    for key, v in value.items():
        if len(key) > 64:
            raise ValueError(f"attribute key '{key[:20]}...' is longer than 64 characters")
        if isinstance(v, str) and len(v) > 512:
            raise ValueError(f"attribute '{key}' is longer than 512 characters")
    return value


class StaticChunking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_chunk_size_tokens: int = Field(DEFAULT_MAX_CHUNK_TOKENS, ge=16, le=4096)
    chunk_overlap_tokens: int = Field(DEFAULT_CHUNK_OVERLAP_TOKENS, ge=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class ChunkingStrategy(BaseModel):
    """`auto` = static with 256 tokens (what the embedding model reads) and 64 overlapping."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "static"] = "auto"
    static: StaticChunking | None = None

    def resolved(self) -> StaticChunking:
        return self.static or StaticChunking()


class VectorStoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=256)
    metadata: Metadata | None = None
    file_ids: list[str] = Field(default_factory=list, max_length=500)
    chunking_strategy: ChunkingStrategy | None = None
    expires_after: dict[str, Any] | None = None  # accepted for compatibility; stores do not expire


class VectorStoreUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=256)
    metadata: Metadata | None = None
    expires_after: dict[str, Any] | None = None


class FileCounts(BaseModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStore(BaseModel):
    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str | None
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["in_progress", "completed", "expired"]
    last_active_at: int | None
    metadata: dict[str, str] | None
    expires_after: None = None
    expires_at: None = None


class VectorStoreDeleted(BaseModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


class VectorStoreFileCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _check = field_validator("attributes")(check_attributes)


class VectorStoreFileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: Attributes | None

    _check = field_validator("attributes")(check_attributes)


class FileError(BaseModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class ChunkingStrategyOut(BaseModel):
    type: Literal["static"] = "static"
    static: StaticChunking


class VectorStoreFile(BaseModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    usage_bytes: int
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: FileError | None
    chunking_strategy: ChunkingStrategyOut
    attributes: Attributes | None


class VectorStoreFileDeleted(BaseModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class BatchFile(VectorStoreFileCreate):
    """One file of a batch: the fields of adding a single file."""


class FileBatchCreate(BaseModel):
    """`file_ids` (with shared `attributes`) or `files` (each with its own)."""

    # One of the two lists, not empty (documented for clients; `_one_of` checks it with a plain message).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"type": "array", "minItems": 1}}}
                for name in ("file_ids", "files")
            ]
        },
    )
    file_ids: list[str] | None = Field(None, max_length=500)
    files: list[BatchFile] | None = Field(None, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    _check = field_validator("attributes")(check_attributes)

    @model_validator(mode="after")
    def _one_of(self) -> FileBatchCreate:
        if bool(self.file_ids) == bool(self.files):
            raise ValueError("give either a non-empty 'file_ids' or a non-empty 'files'")
        return self

    def entries(self) -> list[BatchFile]:
        if self.files:
            return self.files
        return [
            BatchFile(file_id=f, attributes=self.attributes, chunking_strategy=self.chunking_strategy)
            for f in self.file_ids or []
        ]


class FileBatch(BaseModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class RankingOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    ranker: str | None = None
    score_threshold: float = Field(0.0, ge=0, le=1)


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Documented as not blank; `_not_empty` checks it with a plain message.
    query: str | list[str] = Field(
        json_schema_extra={
            "anyOf": [
                {"type": "string", "pattern": r"\S"},
                {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"\S"}},
            ]
        }
    )
    max_num_results: int = Field(10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    rewrite_query: bool = False
    ranking_options: RankingOptions | None = None

    @field_validator("query")
    @classmethod
    def _not_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or not all(t.strip() for t in texts):
            raise ValueError("the query must not be empty")
        return value


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(BaseModel):
    file_id: str
    filename: str
    score: float
    attributes: Attributes | None
    content: list[TextContent]


class SearchResultsPage(BaseModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


class FileContentPage(BaseModel):
    """A vector store file's parsed text, one item per chunk in the file's order (chunks overlap by the
    store's `chunk_overlap_tokens`); empty until the file is ingested."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[TextContent]
    has_more: bool = False
    next_page: str | None = None


class RetrievalOptions(BaseModel):
    """Extension of chat completions: retrieve for the last user message and cite what was used."""

    model_config = ConfigDict(extra="forbid")
    vector_store_ids: list[str] = Field(min_length=1, max_length=8)
    max_num_results: int = Field(4, ge=1, le=20)
    filters: dict[str, Any] | None = None
