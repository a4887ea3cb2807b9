"""OpenAI's file object."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# `adapter`: an archive of a PEFT adapter folder, for POST /v1/models (an extension).
FilePurpose = Literal["fine-tune", "assistants", "evals", "batch", "user_data", "vision", "adapter"]
PURPOSES: tuple[str, ...] = FilePurpose.__args__  # type: ignore[attr-defined]
# Purposes of files the service writes itself (not accepted on upload).
RESULT_PURPOSE = "fine-tune-results"


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
