"""/v1/files: OpenAI's Files API."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse

from service.deps import Context, CurrentPrincipal
from service.errors import ApiError
from service.files import FileService, raise_too_large, to_api
from service.protocol.common import ListResponse
from service.protocol.files import PURPOSES, FileDeleted, FileObject

router = APIRouter(prefix="/v1/files", tags=["files"])


@router.post("", response_model=FileObject, summary="Upload a file")
async def upload_file(
    request: Request,
    ctx: Context,
    principal: CurrentPrincipal,
    file: Annotated[
        UploadFile, File(description="The file. Fine-tune files: JSONL, validated line by line.")
    ],
    purpose: Annotated[str, Form(description=f"One of {', '.join(PURPOSES)}.")],
) -> FileObject:
    """Stores the file in the object store. A `fine-tune` file with a bad line is refused with a 400 that
    names the line; files over TUNESERVE_MAX_FILE_BYTES get a 413."""
    length = int(request.headers.get("content-length") or 0)
    if length > ctx.settings.max_file_bytes + 64 * 1024:  # multipart framing adds a little
        raise_too_large(ctx.settings.max_file_bytes)
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"Invalid purpose '{purpose}'; expected one of {', '.join(PURPOSES)}.",
            param="purpose",
            code="invalid_value",
        )
    import asyncio

    row = await asyncio.to_thread(
        FileService(ctx).upload, principal.tenant, file.filename or "upload", purpose, file.file
    )
    return to_api(row)


@router.get("", response_model=ListResponse[FileObject], summary="List files")
def list_files(
    ctx: Context,
    principal: CurrentPrincipal,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
) -> ListResponse[FileObject]:
    rows = FileService(ctx).list(principal.tenant, purpose, after, limit, order)
    data = [to_api(r) for r in rows[:limit]]
    return ListResponse[FileObject].page(data, has_more=len(rows) > limit)


@router.get("/{file_id}", response_model=FileObject, summary="Retrieve a file")
def retrieve_file(file_id: str, ctx: Context, principal: CurrentPrincipal) -> FileObject:
    return to_api(FileService(ctx).get(principal.tenant, file_id))


@router.get("/{file_id}/content", summary="Retrieve a file's content", response_class=StreamingResponse)
def file_content(file_id: str, ctx: Context, principal: CurrentPrincipal) -> StreamingResponse:
    row, chunks = FileService(ctx).content(principal.tenant, file_id)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{row.filename}"'},
    )


@router.delete("/{file_id}", response_model=FileDeleted, summary="Delete a file")
def delete_file(file_id: str, ctx: Context, principal: CurrentPrincipal) -> FileDeleted:
    row = FileService(ctx).delete(principal.tenant, file_id)
    return FileDeleted(id=row.id)
