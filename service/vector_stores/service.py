"""Vector stores: OpenAI's API over `rag` (loaders, splitter, embedder, FAISS).

`VectorStores` is per process (it caches each store's index and serialises its writers); ingestion of a file
runs as a task (`service.platform.tasks`, a Ray task in the stack) and its result is added to the store's
index by this process, which then writes index and chunks back to the object store under
`vector_stores/<id>/`. Its plain methods block (database): routes call them from the threadpool; the async
ones keep every blocking step off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select

from rag.collection import CHUNKS_OBJECT, INDEX_OBJECT, OBJECT, Collection
from rag.embedder import Embedder
from rag.filters import FilterError, matches, validate
from rag.ingest import embedder, prepare_file
from rag.loaders import SUPPORTED, LoadError
from service.files.service import FileService
from service.platform.db import Database, FileBatchRow, FileRow, VectorStoreFileRow, VectorStoreRow
from service.platform.db.models import now
from service.platform.errors import ApiError
from service.platform.fair_share import FairShare
from service.platform.ids import new_id
from service.platform.quotas import LimitPolicy, check_quota
from service.platform.settings import Settings
from service.platform.storage import ObjectNotFound, ObjectStore
from service.platform.tasks import Background, TaskRunner
from service.protocol.vector_stores import (
    BatchFile,
    ChunkingStrategy,
    ChunkingStrategyOut,
    FileBatch,
    FileCounts,
    FileError,
    SearchResult,
    StaticChunking,
    TextContent,
    VectorStore,
    VectorStoreCreate,
    VectorStoreFile,
    VectorStoreFileCreate,
)

log = logging.getLogger(__name__)
PURPOSES = ("assistants", "user")


def prefix(store_id: str) -> str:
    return f"vector_stores/{store_id}/"


@dataclass
class VectorStores:
    settings: Settings
    db: Database
    store: ObjectStore
    files: FileService
    runner: TaskRunner
    background: Background
    limits: LimitPolicy
    _share: FairShare | None = None  # the ingestions in flight, shared between tenants
    _collections: dict[str, Collection] = field(default_factory=dict)
    _locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def __post_init__(self) -> None:
        self._share = FairShare(self.settings.ingest_tasks_in_flight)

    @property
    def embedding(self) -> tuple[str | None, str]:
        """The embedding model's folder (None: the packaged default) and dtype."""
        s = self.settings
        return (str(s.embedding_model) if s.embedding_model else None, s.embedding_dtype)

    @property
    def embedder(self) -> Embedder:
        """This process's embedder (loaded on first use), for queries and the embeddings API."""
        return embedder(*self.embedding)

    # Stores ----------------------------------------------------------------------------------------
    def create(self, tenant: str, req: VectorStoreCreate) -> VectorStoreRow:
        chunking = (req.chunking_strategy or ChunkingStrategy()).resolved()
        files = [self._file(tenant, f, "file_ids") for f in req.file_ids]
        with self.db.session() as s:
            count = s.scalar(select(func.count()).where(VectorStoreRow.tenant_id == tenant)) or 0
        limit = self.limits(tenant).vector_stores
        check_quota("vector stores", count, 1, limit, "TUNESERVE_MAX_VECTOR_STORES_PER_TENANT")
        row = VectorStoreRow(
            id=new_id("vs_"),
            tenant_id=tenant,
            name=req.name,
            metadata_=req.metadata,
            chunk_max_tokens=chunking.max_chunk_size_tokens,
            chunk_overlap_tokens=chunking.chunk_overlap_tokens,
        )
        with self.db.session() as s:
            s.add(row)
        for f in files:
            self.add_file(tenant, row.id, VectorStoreFileCreate(file_id=f.id))
        return row

    def get(self, tenant: str, store_id: str) -> VectorStoreRow:
        return self.db.get_or_404(VectorStoreRow, store_id, "vector_store_id", tenant_id=tenant)

    def list(self, tenant: str, after: str | None, limit: int) -> tuple[list[VectorStoreRow], bool]:
        """Newest first."""
        q = select(VectorStoreRow).where(VectorStoreRow.tenant_id == tenant)
        return self.db.page(q, after, limit, descending=True)

    def update(self, tenant: str, store_id: str, fields: dict) -> VectorStoreRow:
        self.get(tenant, store_id)
        with self.db.session() as s:
            row = s.get(VectorStoreRow, store_id)
            if "name" in fields:
                row.name = fields["name"]
            if "metadata" in fields:
                row.metadata_ = fields["metadata"]
        return self.get(tenant, store_id)

    async def delete(self, tenant: str, store_id: str) -> None:
        await asyncio.to_thread(self.get, tenant, store_id)
        async with self._locks[store_id]:
            await asyncio.to_thread(self._delete_rows, store_id)
            self._collections.pop(store_id, None)
            await asyncio.to_thread(self.store.delete_prefix, prefix(store_id))

    def _delete_rows(self, store_id: str) -> None:
        with self.db.session() as s:
            for model in (VectorStoreFileRow, FileBatchRow):
                for r in s.scalars(select(model).where(model.store_id == store_id)):
                    s.delete(r)
            s.delete(s.get(VectorStoreRow, store_id))

    def to_api(self, row: VectorStoreRow) -> VectorStore:
        files = self._files(row.id)
        counts = _counts(files)
        return VectorStore(
            id=row.id,
            created_at=row.created_at,
            name=row.name,
            usage_bytes=sum(f.usage_bytes for f in files),
            file_counts=counts,
            status="in_progress" if counts.in_progress else "completed",
            last_active_at=row.last_active_at,
            metadata=row.metadata_,
        )

    # Files -----------------------------------------------------------------------------------------
    def add_file(
        self, tenant: str, store_id: str, entry: VectorStoreFileCreate, batch_id: str | None = None
    ) -> VectorStoreFileRow:
        """Attach a file and start its ingestion; the row says `in_progress` until it is searchable."""
        store = self.get(tenant, store_id)
        self._file(tenant, entry.file_id, "file_id")
        chunking = entry.chunking_strategy.resolved() if entry.chunking_strategy else None
        with self.db.session() as s:
            row = s.get(VectorStoreFileRow, (store_id, entry.file_id))
            if row is None:
                row = VectorStoreFileRow(store_id=store_id, file_id=entry.file_id)
                s.add(row)
            row.status, row.last_error, row.batch_id = "in_progress", None, batch_id
            row.attributes = entry.attributes
            row.chunk_max_tokens = chunking.max_chunk_size_tokens if chunking else store.chunk_max_tokens
            row.chunk_overlap_tokens = (
                chunking.chunk_overlap_tokens if chunking else store.chunk_overlap_tokens
            )
            row.created_at = now()
        self._start(store_id, entry.file_id)
        return self.get_file(tenant, store_id, entry.file_id)

    def get_file(self, tenant: str, store_id: str, file_id: str) -> VectorStoreFileRow:
        self.get(tenant, store_id)
        return self.db.get_or_404(VectorStoreFileRow, (store_id, file_id), "file_id")

    async def file_content(self, tenant: str, store_id: str, file_id: str) -> list[str]:
        """The texts of the file's chunks in the store, in the file's order."""
        await asyncio.to_thread(self.get_file, tenant, store_id, file_id)
        async with self._locks[store_id]:
            collection = await self._collection(store_id)
            return [chunk.text for chunk in collection.file_chunks(file_id)]

    def list_files(
        self,
        tenant: str,
        store_id: str,
        status: str | None,
        batch_id: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[VectorStoreFileRow], bool]:
        """Newest first."""
        self.get(tenant, store_id)
        if batch_id is not None:
            self.get_batch(tenant, store_id, batch_id)
        q = select(VectorStoreFileRow).where(VectorStoreFileRow.store_id == store_id)
        if status is not None:
            q = q.where(VectorStoreFileRow.status == status)
        if batch_id is not None:
            q = q.where(VectorStoreFileRow.batch_id == batch_id)
        return self.db.page(q, after, limit, descending=True)

    def update_file(
        self, tenant: str, store_id: str, file_id: str, attributes: dict | None
    ) -> VectorStoreFileRow:
        self.get_file(tenant, store_id, file_id)
        with self.db.session() as s:
            s.get(VectorStoreFileRow, (store_id, file_id)).attributes = attributes
        return self.get_file(tenant, store_id, file_id)

    async def remove_file(self, tenant: str, store_id: str, file_id: str) -> None:
        """Detach a file: its chunks leave the index (the file itself stays in /v1/files)."""
        await asyncio.to_thread(self.get_file, tenant, store_id, file_id)
        async with self._locks[store_id]:
            collection = await self._collection(store_id)
            if await asyncio.to_thread(collection.remove_file, file_id):
                await self._save(store_id, collection)
            await asyncio.to_thread(self._delete_file_row, store_id, file_id)

    async def forget_file(self, tenant: str, file_id: str) -> None:
        """Remove a file from every vector store of `tenant` (the file is being deleted)."""

        def stores_with_file() -> list[str]:
            with self.db.session() as s:
                q = (
                    select(VectorStoreFileRow.store_id)
                    .join(VectorStoreRow, VectorStoreRow.id == VectorStoreFileRow.store_id)
                    .where(VectorStoreFileRow.file_id == file_id, VectorStoreRow.tenant_id == tenant)
                )
                return list(s.scalars(q))

        for store_id in await asyncio.to_thread(stores_with_file):
            await self.remove_file(tenant, store_id, file_id)

    def _delete_file_row(self, store_id: str, file_id: str) -> None:
        with self.db.session() as s:
            s.delete(s.get(VectorStoreFileRow, (store_id, file_id)))

    def file_to_api(self, row: VectorStoreFileRow) -> VectorStoreFile:
        return VectorStoreFile(
            id=row.file_id,
            usage_bytes=row.usage_bytes,
            created_at=row.created_at,
            vector_store_id=row.store_id,
            status=row.status,
            last_error=FileError(**row.last_error) if row.last_error else None,
            chunking_strategy=ChunkingStrategyOut(
                static=StaticChunking(
                    max_chunk_size_tokens=row.chunk_max_tokens, chunk_overlap_tokens=row.chunk_overlap_tokens
                )
            ),
            attributes=row.attributes,
        )

    # Batches ---------------------------------------------------------------------------------------
    def create_batch(self, tenant: str, store_id: str, entries: list[BatchFile]) -> FileBatchRow:
        self.get(tenant, store_id)
        for e in entries:  # all files must exist before any starts
            self._file(tenant, e.file_id, "file_ids")
        batch = FileBatchRow(id=new_id("vsfb_"), store_id=store_id)
        with self.db.session() as s:
            s.add(batch)
        for e in entries:
            self.add_file(tenant, store_id, e, batch_id=batch.id)
        return batch

    def get_batch(self, tenant: str, store_id: str, batch_id: str) -> FileBatchRow:
        self.get(tenant, store_id)
        return self.db.get_or_404(FileBatchRow, batch_id, "batch_id", store_id=store_id)

    def cancel_batch(self, tenant: str, store_id: str, batch_id: str) -> FileBatchRow:
        """Files of the batch still in progress become `cancelled` (their results are dropped)."""
        self.get_batch(tenant, store_id, batch_id)
        with self.db.session() as s:
            s.get(FileBatchRow, batch_id).cancelled = True
            for f in s.scalars(
                select(VectorStoreFileRow).where(
                    VectorStoreFileRow.batch_id == batch_id, VectorStoreFileRow.status == "in_progress"
                )
            ):
                f.status = "cancelled"
        return self.get_batch(tenant, store_id, batch_id)

    def cancel_all_ingestion(self, tenant: str) -> int:
        """Files of `tenant` still being ingested become `cancelled` (the tenant is being disabled)."""
        with self.db.session() as s:
            files = list(
                s.scalars(
                    select(VectorStoreFileRow)
                    .join(VectorStoreRow, VectorStoreRow.id == VectorStoreFileRow.store_id)
                    .where(VectorStoreRow.tenant_id == tenant, VectorStoreFileRow.status == "in_progress")
                )
            )
            for f in files:
                f.status = "cancelled"
        return len(files)

    def batch_to_api(self, row: FileBatchRow) -> FileBatch:
        counts = _counts([f for f in self._files(row.store_id) if f.batch_id == row.id])
        status = "cancelled" if row.cancelled else "in_progress" if counts.in_progress else "completed"
        return FileBatch(
            id=row.id,
            created_at=row.created_at,
            vector_store_id=row.store_id,
            status=status,
            file_counts=counts,
        )

    # Search ----------------------------------------------------------------------------------------
    async def search(
        self,
        tenant: str,
        store_ids: list[str],
        queries: list[str],
        k: int,
        filters: dict | None = None,
        score_threshold: float = 0.0,
    ) -> list[SearchResult]:
        """The `k` best chunks over `store_ids` for any of `queries`, best first."""
        if filters is not None:
            try:
                validate(filters)
            except FilterError as exc:
                raise ApiError(400, str(exc), param="filters", code="invalid_value") from None
        stores = await asyncio.to_thread(lambda: [self.get(tenant, sid) for sid in store_ids])
        vectors = await asyncio.to_thread(self.embedder.embed, queries)
        best: dict[tuple[str, str], tuple[float, SearchResult]] = {}
        for store in stores:
            files = await asyncio.to_thread(self._searchable_files, store.id, filters)
            async with self._locks[store.id]:
                collection = await self._collection(store.id)
                hits = await asyncio.to_thread(
                    lambda c=collection, ids=set(files): [h for v in vectors for h in c.search(v, k, ids)]
                )
            for chunk, score in hits:
                key = (chunk.file_id, chunk.sha256)
                if score < score_threshold or (key in best and best[key][0] >= score):
                    continue
                file, filename = files[chunk.file_id]
                best[key] = (
                    score,
                    SearchResult(
                        file_id=chunk.file_id,
                        filename=filename,
                        score=round(score, 6),
                        attributes=file.attributes,
                        content=[TextContent(text=chunk.text)],
                    ),
                )
            await asyncio.to_thread(self._touch, store.id)
        return [r for _, r in sorted(best.values(), key=lambda x: -x[0])][:k]

    def _searchable_files(
        self, store_id: str, filters: dict | None
    ) -> dict[str, tuple[VectorStoreFileRow, str]]:
        """The store's completed files that pass `filters`, each with its filename."""
        with self.db.session() as s:
            rows = s.execute(
                select(VectorStoreFileRow, FileRow.filename)
                .join(FileRow, FileRow.id == VectorStoreFileRow.file_id, isouter=True)
                .where(VectorStoreFileRow.store_id == store_id, VectorStoreFileRow.status == "completed")
            ).all()
        return {
            f.file_id: (f, name or "")
            for f, name in rows
            if filters is None or matches(filters, f.attributes or {})
        }

    # Ingestion -------------------------------------------------------------------------------------
    def resume(self) -> int:
        """Restart the ingestion of files left `in_progress` by a previous process."""
        with self.db.session() as s:
            pending = list(
                s.scalars(select(VectorStoreFileRow).where(VectorStoreFileRow.status == "in_progress"))
            )
        for f in pending:
            self._start(f.store_id, f.file_id)
        return len(pending)

    def _start(self, store_id: str, file_id: str) -> None:
        self.background.spawn(lambda: self._ingest(store_id, file_id))

    async def _ingest(self, store_id: str, file_id: str) -> None:
        try:
            row, file = await asyncio.to_thread(self._ingesting, store_id, file_id)
            if row is None:
                return
            async with self._share.slot(file.tenant_id):
                data = await asyncio.to_thread(self.store.get_bytes, file.key, file.sha256)
                async with self._locks[store_id]:
                    known = set((await self._collection(store_id)).shas)
                prepared = await self.runner.run(
                    prepare_file,
                    file.filename,
                    data,
                    row.chunk_max_tokens,
                    row.chunk_overlap_tokens,
                    known,
                    *self.embedding,
                )
            async with self._locks[store_id]:
                current, _ = await asyncio.to_thread(self._ingesting, store_id, file_id)
                if current is None:
                    return  # removed or cancelled meanwhile
                collection = await self._collection(store_id)
                used = await asyncio.to_thread(
                    collection.add_file, file_id, prepared.chunks, prepared.new_vectors
                )
                await self._save(store_id, collection)
                await asyncio.to_thread(self._finish, store_id, file_id, "completed", used)
        except LoadError as exc:
            code = "unsupported_file" if "unsupported file type" in str(exc) else "invalid_file"
            error = {"code": code, "message": str(exc)}
            await asyncio.to_thread(self._finish, store_id, file_id, "failed", 0, error)
        except Exception as exc:  # an infrastructure failure fails this file only
            log.exception("ingestion of %s into %s failed", file_id, store_id)
            error = {"code": "server_error", "message": f"{type(exc).__name__}: {exc}"}
            await asyncio.to_thread(self._finish, store_id, file_id, "failed", 0, error)

    def _ingesting(self, store_id: str, file_id: str) -> tuple[VectorStoreFileRow | None, FileRow | None]:
        """The store's file row while it is still to be ingested (else None), and its file."""
        with self.db.session() as s:
            row = s.get(VectorStoreFileRow, (store_id, file_id))
            file = s.get(FileRow, file_id)
        if row is None or row.status != "in_progress":
            return None, None
        if file is None:
            raise LoadError("the file was deleted from /v1/files")
        return row, file

    def _finish(
        self, store_id: str, file_id: str, status: str, usage_bytes: int = 0, error: dict | None = None
    ) -> None:
        with self.db.session() as s:
            row = s.get(VectorStoreFileRow, (store_id, file_id))
            if row is not None and row.status == "in_progress":
                row.status, row.usage_bytes, row.last_error = status, usage_bytes, error

    # Helpers ---------------------------------------------------------------------------------------
    async def _collection(self, store_id: str) -> Collection:
        """The store's index and chunks: cached, else read from the object store, else a new one."""
        if store_id not in self._collections:
            try:
                self._collections[store_id] = await asyncio.to_thread(self._read, store_id)
            except ObjectNotFound:
                dim = await asyncio.to_thread(lambda: self.embedder.dimension)
                self._collections[store_id] = Collection(dim)
        return self._collections[store_id]

    def _read(self, store_id: str) -> Collection:
        try:
            return Collection.from_bytes(self.store.get_bytes(prefix(store_id) + OBJECT))
        except ObjectNotFound:  # a store saved before collections were one object
            legacy = {
                name: self.store.get_bytes(prefix(store_id) + name) for name in (INDEX_OBJECT, CHUNKS_OBJECT)
            }
            return Collection.from_objects(legacy)

    async def _save(self, store_id: str, collection: Collection) -> None:
        """One object, written whole: a crash leaves the store searchable, as it was or as it is now."""

        def write() -> None:
            self.store.put_bytes(prefix(store_id) + OBJECT, collection.to_bytes())
            for name in (INDEX_OBJECT, CHUNKS_OBJECT):  # the old layout, superseded now
                self.store.delete(prefix(store_id) + name)

        await asyncio.to_thread(write)

    def _files(self, store_id: str) -> list[VectorStoreFileRow]:
        return self.db.page(select(VectorStoreFileRow).where(VectorStoreFileRow.store_id == store_id))[0]

    def _file(self, tenant: str, file_id: str, param: str) -> FileRow:
        row = self.files.get(tenant, file_id, param=param)
        if row.purpose not in PURPOSES:
            raise ApiError(
                400,
                f"File '{file_id}' has purpose '{row.purpose}'; vector stores take files uploaded with "
                f"purpose 'assistants' ({', '.join(SUPPORTED)}).",
                param=param,
                code="invalid_file",
            )
        return row

    def _touch(self, store_id: str) -> None:
        with self.db.session() as s:
            s.get(VectorStoreRow, store_id).last_active_at = now()


def _counts(files: list[VectorStoreFileRow]) -> FileCounts:
    counts = FileCounts(total=len(files))
    for f in files:
        setattr(counts, f.status, getattr(counts, f.status) + 1)
    return counts
