"""Request schemas of the chat and completions endpoints, for validation of the essentials and the docs.

Only what the API itself needs is checked here (`model`, `messages`/`prompt`); every other field passes
through unchanged to vLLM's OpenAI layer, which validates it and answers bad values with a 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from service.protocol.common import Metadata
from service.protocol.vector_stores import RetrievalOptions


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class SamplingFields(BaseModel):
    """The sampling fields both endpoints share (all of vLLM's extra sampling fields are accepted too)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="A base model id or one of your fine-tuned model ids (`GET /v1/models`).")
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Choices per request: at most 16 here (each is a sequence in the engine's batch).",
    )
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        None, description="Up to 4 sequences where the answer stops (not included in it)."
    )
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    def for_engine(self) -> tuple[dict, RetrievalOptions | None]:
        """The body the engine gets (the fields the caller set, less those the service itself acts on:
        `retrieval`, `store`, `metadata`), and the retrieval to do before it (a chat's, if asked)."""
        body = self.model_dump(exclude_unset=True, exclude={"retrieval", "store", "metadata"})
        return body, getattr(self, "retrieval", None)


class ChatCompletionCreate(SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1, description="OpenAI chat messages.")
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = Field(
        None, description='`{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`.'
    )
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="OpenAI's function tools. For a base model whose chat template has no tools (SmolLM2) "
        "they are written into the prompt in the format its fine-tunes learn (README: Tool calling); calls "
        "come back as `tool_calls`.",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        None, description='"auto", "none", "required" or {"type": "function", "function": {"name": ...}}.'
    )
    parallel_tool_calls: bool | None = None
    # OpenAI's deprecated function calling: vLLM ignores these fields, so the model would answer as if it
    # had no functions. A 400 says what to send instead (training data in that format is read as tools).
    functions: Any = Field(None, description="Deprecated: refused; send `tools`.")
    function_call: Any = Field(None, description="Deprecated: refused; send `tool_choice`.")
    retrieval: RetrievalOptions | None = Field(
        None,
        description="Extension: retrieve from these vector stores for the last user message, put the chunks "
        "in the prompt, and return them as `citations` (in the response; in the first chunk when streaming).",
    )
    store: bool | None = Field(
        None,
        description="Keep the request and its answer (streamed or not) as a stored chat completion: listed "
        "by `GET /v1/chat/completions`, counted in your storage limit, deleted after the retention "
        "(TUNESERVE_RESPONSE_RETENTION_DAYS); `tuneserve completions export` makes fine-tuning data of them.",
    )
    metadata: Metadata | None = Field(None, description="Kept with a stored completion, to filter lists by.")

    @field_validator("functions", "function_call")
    @classmethod
    def _deprecated_function_calling(cls, value: Any, info: ValidationInfo) -> None:
        if value is not None:
            instead = {"functions": "tools", "function_call": "tool_choice"}[info.field_name]
            raise ValueError(
                f"the deprecated `{info.field_name}` is not supported: send `{instead}` (OpenAI's current "
                'function calling: the same functions, each as {"type": "function", "function": {...}})'
            )
        return None


MAX_PROMPTS = 64  # prompts of one completions request: each is a sequence in the engine's batch, times n


class CompletionCreate(SamplingFields):
    prompt: (
        str
        | Annotated[list[str], Field(max_length=MAX_PROMPTS)]
        | list[int]
        | Annotated[list[list[int]], Field(max_length=MAX_PROMPTS)]
    ) = Field(description=f"Prompt text or token ids; at most {MAX_PROMPTS} prompts per request.")
    echo: bool | None = Field(None, description="Return the prompt too (with `logprobs`, scored).")
    logprobs: int | None = None


class ChatCompletionUpdate(BaseModel):
    """What can change of a stored chat completion."""

    model_config = ConfigDict(extra="forbid")
    metadata: Metadata | None = Field(description="The new metadata (replaces the old; null clears it).")


class StoredCompletionsFilter(BaseModel):
    """Which of the tenant's stored chat completions: all of them unless narrowed; oldest first."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="Only the completions of this model.")
    metadata: Metadata | None = Field(None, description="Only those with all of these pairs.")
    created_after: int | None = Field(None, description="Only those created at or after this Unix time.")
    created_before: int | None = Field(None, description="Only those created before this Unix time.")
    limit: int | None = Field(None, ge=1, le=100_000, description="At most this many (the oldest).")


class StoredCompletionsExport(StoredCompletionsFilter):
    """Extension: stored chat completions written as a fine-tuning file (distillation)."""

    filename: str = Field(
        "stored-chats.jsonl",
        min_length=1,
        max_length=255,
        pattern=r"^[^\x00-\x1f/\\]+$",
        description="The file's name (no slashes or control characters).",
    )


class StoredCompletionsExported(BaseModel):
    """The fine-tuning file made, and what went in."""

    file_id: str
    filename: str
    bytes: int
    exported: int = Field(description="Chats written, one a line.")
    skipped: int = Field(description="Chats left out: answers cut off by max_tokens, or empty.")
