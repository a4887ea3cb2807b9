"""/v1/vector_stores: OpenAI's vector stores, their files and file batches, and search."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from service.api.deps import CurrentPrincipal, Svc
from service.protocol.common import ListResponse
from service.protocol.vector_stores import (
    FileBatch,
    FileBatchCreate,
    FileContentPage,
    SearchRequest,
    SearchResultsPage,
    TextContent,
    VectorStore,
    VectorStoreCreate,
    VectorStoreDeleted,
    VectorStoreFile,
    VectorStoreFileCreate,
    VectorStoreFileDeleted,
    VectorStoreFileUpdate,
    VectorStoreUpdate,
)

router = APIRouter(prefix="/v1/vector_stores", tags=["vector stores"])
Limit = Annotated[int, Query(ge=1, le=100)]
Status = Literal["in_progress", "completed", "failed", "cancelled"]


def _files_page(
    services: Svc,
    tenant: str,
    store_id: str,
    status: str | None,
    batch_id: str | None,
    after: str | None,
    limit: int,
) -> ListResponse[VectorStoreFile]:
    stores = services.vector_stores
    rows, more = stores.list_files(tenant, store_id, status, batch_id, after, limit)
    return ListResponse[VectorStoreFile].page([stores.file_to_api(r) for r in rows], has_more=more)


@router.post("", response_model=VectorStore, summary="Create a vector store")
def create_store(req: VectorStoreCreate, services: Svc, principal: CurrentPrincipal) -> VectorStore:
    """`file_ids` start ingesting at once; `chunking_strategy` (default: 256-token chunks, 64 overlapping)
    applies to every file added later that does not name its own."""
    stores = services.vector_stores
    return stores.to_api(stores.create(principal.tenant, req))


@router.get("", response_model=ListResponse[VectorStore], summary="List vector stores")
def list_stores(
    services: Svc, principal: CurrentPrincipal, after: str | None = None, limit: Limit = 20
) -> ListResponse[VectorStore]:
    stores = services.vector_stores
    rows, more = stores.list(principal.tenant, after, limit)
    return ListResponse[VectorStore].page([stores.to_api(r) for r in rows], has_more=more)


@router.get("/{store_id}", response_model=VectorStore, summary="Retrieve a vector store")
def get_store(store_id: str, services: Svc, principal: CurrentPrincipal) -> VectorStore:
    return services.vector_stores.to_api(services.vector_stores.get(principal.tenant, store_id))


@router.post("/{store_id}", response_model=VectorStore, summary="Modify a vector store")
def update_store(
    store_id: str, req: VectorStoreUpdate, services: Svc, principal: CurrentPrincipal
) -> VectorStore:
    stores = services.vector_stores
    return stores.to_api(stores.update(principal.tenant, store_id, req.model_dump(exclude_unset=True)))


@router.delete("/{store_id}", response_model=VectorStoreDeleted, summary="Delete a vector store")
async def delete_store(store_id: str, services: Svc, principal: CurrentPrincipal) -> VectorStoreDeleted:
    """Deletes the store, its index and chunks; the files stay in /v1/files."""
    await services.vector_stores.delete(principal.tenant, store_id)
    return VectorStoreDeleted(id=store_id)


@router.post("/{store_id}/files", response_model=VectorStoreFile, summary="Add a file to a vector store")
def add_file(
    store_id: str, req: VectorStoreFileCreate, services: Svc, principal: CurrentPrincipal
) -> VectorStoreFile:
    """Loads (.txt .md .html .pdf .json .jsonl .docx), splits, embeds and indexes the file in the background:
    poll until `status` is `completed`, or `failed` with `last_error`."""
    stores = services.vector_stores
    return stores.file_to_api(stores.add_file(principal.tenant, store_id, req))


@router.get("/{store_id}/files", response_model=ListResponse[VectorStoreFile], summary="List a store's files")
def list_files(
    store_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    filter: Status | None = None,  # OpenAI's parameter name
    after: str | None = None,
    limit: Limit = 20,
) -> ListResponse[VectorStoreFile]:
    return _files_page(services, principal.tenant, store_id, filter, None, after, limit)


@router.get("/{store_id}/files/{file_id}", response_model=VectorStoreFile, summary="Retrieve a store's file")
def get_file(store_id: str, file_id: str, services: Svc, principal: CurrentPrincipal) -> VectorStoreFile:
    stores = services.vector_stores
    return stores.file_to_api(stores.get_file(principal.tenant, store_id, file_id))


@router.get(
    "/{store_id}/files/{file_id}/content",
    response_model=FileContentPage,
    summary="Retrieve a store's file's parsed content",
)
async def file_content(
    store_id: str, file_id: str, services: Svc, principal: CurrentPrincipal
) -> FileContentPage:
    """The text the store holds of the file, as the chunks it searches, in the file's order."""
    texts = await services.vector_stores.file_content(principal.tenant, store_id, file_id)
    return FileContentPage(data=[TextContent(text=text) for text in texts])


@router.post(
    "/{store_id}/files/{file_id}", response_model=VectorStoreFile, summary="Update a file's attributes"
)
def update_file(
    store_id: str, file_id: str, req: VectorStoreFileUpdate, services: Svc, principal: CurrentPrincipal
) -> VectorStoreFile:
    stores = services.vector_stores
    return stores.file_to_api(stores.update_file(principal.tenant, store_id, file_id, req.attributes))


@router.delete(
    "/{store_id}/files/{file_id}", response_model=VectorStoreFileDeleted, summary="Remove a file from a store"
)
async def remove_file(
    store_id: str, file_id: str, services: Svc, principal: CurrentPrincipal
) -> VectorStoreFileDeleted:
    """Its chunks leave the index at once; the file itself stays in /v1/files."""
    await services.vector_stores.remove_file(principal.tenant, store_id, file_id)
    return VectorStoreFileDeleted(id=file_id)


@router.post("/{store_id}/file_batches", response_model=FileBatch, summary="Add many files at once")
def create_batch(
    store_id: str, req: FileBatchCreate, services: Svc, principal: CurrentPrincipal
) -> FileBatch:
    """Every file is checked first (an unknown one is a 404 and nothing starts); then each is ingested as
    its own task, in parallel; one file failing does not affect the others."""
    stores = services.vector_stores
    return stores.batch_to_api(stores.create_batch(principal.tenant, store_id, req.entries()))


@router.get("/{store_id}/file_batches/{batch_id}", response_model=FileBatch, summary="Retrieve a file batch")
def get_batch(store_id: str, batch_id: str, services: Svc, principal: CurrentPrincipal) -> FileBatch:
    stores = services.vector_stores
    return stores.batch_to_api(stores.get_batch(principal.tenant, store_id, batch_id))


@router.post(
    "/{store_id}/file_batches/{batch_id}/cancel", response_model=FileBatch, summary="Cancel a file batch"
)
def cancel_batch(store_id: str, batch_id: str, services: Svc, principal: CurrentPrincipal) -> FileBatch:
    stores = services.vector_stores
    return stores.batch_to_api(stores.cancel_batch(principal.tenant, store_id, batch_id))


@router.get(
    "/{store_id}/file_batches/{batch_id}/files",
    response_model=ListResponse[VectorStoreFile],
    summary="List a file batch's files",
)
def list_batch_files(
    store_id: str,
    batch_id: str,
    services: Svc,
    principal: CurrentPrincipal,
    filter: Status | None = None,  # OpenAI's parameter name
    after: str | None = None,
    limit: Limit = 20,
) -> ListResponse[VectorStoreFile]:
    return _files_page(services, principal.tenant, store_id, filter, batch_id, after, limit)


@router.post("/{store_id}/search", response_model=SearchResultsPage, summary="Search a vector store")
async def search(
    store_id: str, req: SearchRequest, services: Svc, principal: CurrentPrincipal
) -> SearchResultsPage:
    """Chunks ranked by cosine similarity to the query (embedded with the store's model); `filters` compare
    the files' attributes (`eq ne gt gte lt lte in nin`, combined with `and`/`or`). `rewrite_query` only
    normalises whitespace (no model rewrites it)."""
    queries = [req.query] if isinstance(req.query, str) else list(req.query)
    if req.rewrite_query:
        queries = [" ".join(q.split()) for q in queries]
    threshold = req.ranking_options.score_threshold if req.ranking_options else 0.0
    results = await services.vector_stores.search(
        principal.tenant, [store_id], queries, req.max_num_results, req.filters, threshold
    )
    return SearchResultsPage(search_query=queries, data=results)
