"""/v1/files: OpenAI's Files API."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from service.api.deps import CurrentPrincipal, Svc
from service.files.service import too_large
from service.platform.errors import ApiError
from service.protocol.common import ListResponse
from service.protocol.files import PURPOSES, FileDeleted, FileObject

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject, summary="Upload a file")
def upload_file(
    request: Request,
    services: Svc,
    principal: CurrentPrincipal,
    file: Annotated[
        UploadFile, File(description="The file. Fine-tune files: JSONL, validated line by line.")
    ],
    purpose: Annotated[str, Form(description=f"One of {', '.join(PURPOSES)}.")],
) -> FileObject:
    """Stores the file in the object store. A `fine-tune` file with a bad line is refused with a 400 that
    names the line; files over TUNESERVE_MAX_FILE_BYTES get a 413."""
    limit = services.files.max_bytes
    if int(request.headers.get("content-length") or 0) > limit + 64 * 1024:  # multipart framing adds a little
        raise too_large(limit)
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"Invalid purpose '{purpose}'; expected one of {', '.join(PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )
    row = services.files.upload(principal.tenant, file.filename or "upload", purpose, file.file)
    return services.files.to_api(row)


@router.get("", response_model=ListResponse[FileObject], summary="List files")
def list_files(
    services: Svc,
    principal: CurrentPrincipal,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
) -> ListResponse[FileObject]:
    rows, more = services.files.list(principal.tenant, purpose, after, limit, order)
    return ListResponse[FileObject].page([services.files.to_api(r) for r in rows], has_more=more)


@router.get("/{file_id}", response_model=FileObject, summary="Retrieve a file")
def retrieve_file(file_id: str, services: Svc, principal: CurrentPrincipal) -> FileObject:
    return services.files.to_api(services.files.get(principal.tenant, file_id))


@router.get("/{file_id}/content", summary="Retrieve a file's content", response_class=StreamingResponse)
def file_content(file_id: str, services: Svc, principal: CurrentPrincipal) -> StreamingResponse:
    row, chunks = services.files.content(principal.tenant, file_id)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": content_disposition(row.filename)},
    )


@router.delete("/{file_id}", response_model=FileDeleted, summary="Delete a file")
async def delete_file(file_id: str, services: Svc, principal: CurrentPrincipal) -> FileDeleted:
    """The file leaves every vector store of its owner first (its text is no longer found), then goes;
    another tenant's file is in none of theirs, and is a 404."""
    await services.vector_stores.forget_file(principal.tenant, file_id)
    row = await asyncio.to_thread(services.files.delete, principal.tenant, file_id)
    return FileDeleted(id=row.id)


def content_disposition(filename: str) -> str:
    """An attachment header for any file name: an ASCII fallback, and the name itself (RFC 6266/5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
