"""OpenAI's Batch API shapes (`/v1/batches`): a file of requests answered in the background, into an output
file and an error file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.protocol.common import Metadata

BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
BATCH_ENDPOINTS: tuple[str, ...] = BatchEndpoint.__args__  # type: ignore[attr-defined]
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
# Still to be answered: a batch in these states is driven (and resumed after a restart).
ACTIVE_BATCH: tuple[str, ...] = ("validating", "in_progress", "finalizing", "cancelling")
# The purposes of the files a batch reads and writes.
BATCH_PURPOSE, BATCH_OUTPUT_PURPOSE = "batch", "batch_output"


class BatchCreate(BaseModel):
    input_file_id: str = Field(
        description="A file of yours with purpose `batch`: one request a line, "
        '`{"custom_id", "method": "POST", "url", "body"}`.'
    )
    endpoint: BatchEndpoint = Field(description="The endpoint every line calls (its `url`).")
    completion_window: Literal["24h"] = Field(
        description="How long the batch may take; what is not answered by then ends `expired`."
    )
    metadata: Metadata | None = None


class BatchRequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict] = Field(default_factory=list)


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None
