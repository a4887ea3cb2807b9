"""Shapes shared by every resource: errors, lists, models."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: {"error": {"message", "type", "param", "code"}}."""

    error: ErrorBody


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


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True
