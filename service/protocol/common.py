"""Shapes shared by every resource: errors, lists, models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, Field, StringConstraints

T = TypeVar("T")

# OpenAI's `metadata` on the objects a request creates or changes: at most 16 pairs, keys of at most 64
# characters, values of at most 512 (what it documents, and what the list filter below can look up).
Metadata = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], Annotated[str, StringConstraints(max_length=512)]],
    Field(max_length=16, description="Up to 16 key-value pairs: keys up to 64 characters, values up to 512."),
]

_METADATA_KEY = re.compile(r"metadata\[([^\[\]]{1,64})\]")


@dataclass(frozen=True)
class MetadataFilter:
    """OpenAI's `metadata` filter of a list: `metadata[KEY]=VALUE` (repeatable, every pair must match),
    or `metadata=null` for only the objects that have none."""

    equals: dict[str, str] = field(default_factory=dict)
    absent: bool = False

    @classmethod
    def from_query(cls, params: Iterable[tuple[str, str]]) -> MetadataFilter | None:
        """The filter a query string asks for (None: no filter). Raises ValueError, saying why, for a
        malformed one."""
        equals: dict[str, str] = {}
        absent = False
        for name, value in params:
            if name == "metadata":
                if value != "null":
                    raise ValueError("use metadata[KEY]=VALUE to filter by metadata, or metadata=null")
                absent = True
            elif name.startswith("metadata["):
                match = _METADATA_KEY.fullmatch(name)
                if match is None:
                    raise ValueError(f"{name!r} is not metadata[KEY] with a key of 1 to 64 characters")
                equals[match.group(1)] = value
        if absent and equals:
            raise ValueError("metadata=null cannot be combined with metadata[KEY]=VALUE")
        return cls(equals, absent) if absent or equals else None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: {"error": {"message", "type", "param", "code"}}."""

    error: ErrorBody


# What any operation may answer besides its success, all in OpenAI's error envelope (documented on every
# route, so that clients and fuzzers know them).
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad request: a field is missing, malformed or out of range (`param` names it)",
        401: "Missing, unknown or revoked API key",
        403: "An admin-only operation with a tenant's key",
        404: "No such resource for this tenant, or no such route",
        405: "Method not allowed on this path (the `Allow` header lists those that are)",
        409: "The resource is in a state that does not allow this",
        413: "Request body or upload too large",
        422: "A model that cannot be served",
        429: "Over a rate limit or quota (`Retry-After` says when to try again)",
        500: "Server error, with a request id (also in `x-request-id`) to quote",
        503: "Not ready: a component the operation needs is down",
    }.items()
}


class ListResponse(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    @classmethod
    def page(cls, data: list[T], has_more: bool = False) -> ListResponse[T]:
        """A page of objects that have an `id`, with OpenAI's cursor fields filled in."""
        return cls(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,  # type: ignore[attr-defined]
            last_id=data[-1].id if data else None,
        )  # type: ignore[attr-defined]


def page_of(data: list[dict], has_more: bool) -> dict:
    """A page of plain objects (dicts with an `id`) in OpenAI's list shape, cursors filled in."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


class Model(BaseModel):
    """An entry of GET /v1/models."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    modalities: list[Literal["text", "image"]] = Field(
        default_factory=lambda: ["text"],
        description="Extension: what the model takes as input; a vision-language model takes images too.",
    )
    type: Literal["llm", "embeddings"] = Field(
        "llm",
        description="Extension (as LM Studio's API names it): `llm` answers chat completions, completions "
        "and responses; `embeddings` answers /v1/embeddings only (the vector stores' embedder).",
    )
    lineage: ModelLineage | None = Field(
        None, description="Extension, in GET /v1/models/{id}: base, parent, training job and data, evals."
    )


class ModelEvalRun(BaseModel):
    """An eval run of the model, with its totals."""

    eval_id: str
    run_id: str
    status: str
    result_counts: dict[str, int]
    per_testing_criteria_results: list[dict]


class ModelLineage(BaseModel):
    """Where a model comes from, and how it scored: GET /v1/models/{id} only."""

    base_model: str
    parent: str | None = Field(None, description="The fine-tuned model it was trained from, if any.")
    training_job: str | None = None
    training_file: str | None = None
    training_file_sha256: str | None = Field(None, description="The training data's SHA-256, as trained.")
    validation_file: str | None = None
    hyperparameters: dict | None = Field(None, description="As resolved for the run, LoRA options included.")
    evals: list[ModelEvalRun] = Field(default_factory=list, description="Runs of the model, newest first.")


class ModelImport(BaseModel):
    """POST /v1/models (an extension): an existing PEFT LoRA adapter becomes a model of the caller's."""

    file: str | None = Field(
        None,
        description="A file uploaded with purpose `adapter`: the adapter folder as .tar.gz or .zip. Give "
        "this or `source`.",
    )
    source: str | None = Field(
        None,
        description="An S3 folder holding the adapter's files, `s3://bucket/prefix/`, under a prefix the "
        "admin allows (TUNESERVE_ADAPTER_IMPORT_SOURCES). Give this or `file`.",
        examples=["s3://shared-adapters/support-bot/"],
    )
    base_model: str = Field(description="The base model the adapter was trained on.")
    suffix: str | None = Field(
        None, max_length=40, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_-]*$", description="Part of the new model's id."
    )


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
