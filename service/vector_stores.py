"""Vector stores: OpenAI's API over `rag` (loaders, splitter, embedder, FAISS).

`VectorStores` is per process (it caches each store's index and serialises its writers); ingestion of a file
runs as a task (`service.tasks`, a Ray task in the stack) and its result is added to the store's index by
this process, which then writes index and chunks back to the object store under `vector_stores/<id>/`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict

from sqlalchemy import select

from rag.collection import Collection
from rag.filters import FilterError, matches, validate
from rag.ingest import embedder, prepare_file
from rag.loaders import SUPPORTED, LoadError
from service.context import AppContext
from service.db import FileBatchRow, FileRow, VectorStoreFileRow, VectorStoreRow
from service.db.models import now
from service.errors import ApiError
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
)
from service.storage import ObjectNotFound
from service.tasks import TaskRunner

log = logging.getLogger(__name__)
PURPOSES = ("assistants", "user")


def prefix(store_id: str) -> str:
    return f"vector_stores/{store_id}/"


class VectorStores:
    def __init__(self, ctx: AppContext, runner: TaskRunner) -> None:
        self.ctx = ctx
        self.runner = runner
        self._collections: dict[str, Collection] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()

    @property
    def _embedder(self):  # noqa: ANN202
        s = self.ctx.settings
        return embedder(str(s.embedding_model) if s.embedding_model else None, s.embedding_dtype)

    # Stores ----------------------------------------------------------------------------------------
    def create(self, tenant: str, req: VectorStoreCreate) -> VectorStoreRow:
        chunking = (req.chunking_strategy or ChunkingStrategy()).resolved()
        files = [self._file(tenant, f, "file_ids") for f in req.file_ids]
        row = VectorStoreRow(
            id="vs_" + secrets.token_hex(12),
            tenant_id=tenant,
            name=req.name,
            metadata_=req.metadata,
            chunk_max_tokens=chunking.max_chunk_size_tokens,
            chunk_overlap_tokens=chunking.chunk_overlap_tokens,
        )
        with self.ctx.db.session() as s:
            s.add(row)
        for f in files:
            self.add_file(tenant, row.id, BatchFile(file_id=f.id))
        return row

    def get(self, tenant: str, store_id: str) -> VectorStoreRow:
        row = self.ctx.db.get_where(VectorStoreRow, store_id, tenant_id=tenant)
        if row is None:
            raise ApiError(
                404, f"No vector store with id '{store_id}'.", param="vector_store_id", code="not_found"
            )
        return row

    def list(self, tenant: str) -> list[VectorStoreRow]:
        with self.ctx.db.session() as s:
            return list(
                s.scalars(
                    select(VectorStoreRow)
                    .where(VectorStoreRow.tenant_id == tenant)
                    .order_by(VectorStoreRow.created_at.desc(), VectorStoreRow.id)
                )
            )

    def update(self, tenant: str, store_id: str, fields: dict) -> VectorStoreRow:
        self.get(tenant, store_id)
        with self.ctx.db.session() as s:
            row = s.get(VectorStoreRow, store_id)
            if "name" in fields:
                row.name = fields["name"]
            if "metadata" in fields:
                row.metadata_ = fields["metadata"]
        return self.get(tenant, store_id)

    async def delete(self, tenant: str, store_id: str) -> None:
        self.get(tenant, store_id)
        async with self._locks[store_id]:
            with self.ctx.db.session() as s:
                for model in (VectorStoreFileRow, FileBatchRow):
                    for r in s.scalars(select(model).where(model.store_id == store_id)):
                        s.delete(r)
                s.delete(s.get(VectorStoreRow, store_id))
            self._collections.pop(store_id, None)
            await asyncio.to_thread(self.ctx.store.delete_prefix, prefix(store_id))

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
        self, tenant: str, store_id: str, entry: BatchFile, batch_id: str | None = None
    ) -> VectorStoreFileRow:
        """Attach a file and start its ingestion; the row says `in_progress` until it is searchable."""
        store = self.get(tenant, store_id)
        self._file(tenant, entry.file_id, "file_id")
        chunking = entry.chunking_strategy.resolved() if entry.chunking_strategy else None
        with self.ctx.db.session() as s:
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
        with self.ctx.db.session() as s:
            row = s.get(VectorStoreFileRow, (store_id, file_id))
        if row is None:
            raise ApiError(
                404, f"No file '{file_id}' in vector store '{store_id}'.", param="file_id", code="not_found"
            )
        return row

    def list_files(
        self, tenant: str, store_id: str, status: str | None = None, batch_id: str | None = None
    ) -> list[VectorStoreFileRow]:
        self.get(tenant, store_id)
        return [
            f
            for f in self._files(store_id)
            if (status is None or f.status == status) and (batch_id is None or f.batch_id == batch_id)
        ]

    def update_file(
        self, tenant: str, store_id: str, file_id: str, attributes: dict | None
    ) -> VectorStoreFileRow:
        self.get_file(tenant, store_id, file_id)
        with self.ctx.db.session() as s:
            s.get(VectorStoreFileRow, (store_id, file_id)).attributes = attributes
        return self.get_file(tenant, store_id, file_id)

    async def remove_file(self, tenant: str, store_id: str, file_id: str) -> None:
        """Detach a file: its chunks leave the index (the file itself stays in /v1/files)."""
        self.get_file(tenant, store_id, file_id)
        async with self._locks[store_id]:
            collection = await self._collection(store_id)
            if collection.remove_file(file_id):
                await self._save(store_id, collection)
            with self.ctx.db.session() as s:
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
        batch = FileBatchRow(id="vsfb_" + secrets.token_hex(12), store_id=store_id)
        with self.ctx.db.session() as s:
            s.add(batch)
        for e in entries:
            self.add_file(tenant, store_id, e, batch_id=batch.id)
        return batch

    def get_batch(self, tenant: str, store_id: str, batch_id: str) -> FileBatchRow:
        self.get(tenant, store_id)
        row = self.ctx.db.get_where(FileBatchRow, batch_id, store_id=store_id)
        if row is None:
            raise ApiError(
                404, f"No file batch '{batch_id}' in '{store_id}'.", param="batch_id", code="not_found"
            )
        return row

    def cancel_batch(self, tenant: str, store_id: str, batch_id: str) -> FileBatchRow:
        """Files of the batch still in progress become `cancelled` (their results are dropped)."""
        self.get_batch(tenant, store_id, batch_id)
        with self.ctx.db.session() as s:
            s.get(FileBatchRow, batch_id).cancelled = True
            for f in s.scalars(
                select(VectorStoreFileRow).where(
                    VectorStoreFileRow.batch_id == batch_id, VectorStoreFileRow.status == "in_progress"
                )
            ):
                f.status = "cancelled"
        return self.get_batch(tenant, store_id, batch_id)

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
        stores = [self.get(tenant, sid) for sid in store_ids]
        vectors = await asyncio.to_thread(self._embedder.embed, queries)
        names: dict[str, str] = {}
        best: dict[tuple[str, str], tuple[float, SearchResult]] = {}
        for store in stores:
            files = {f.file_id: f for f in self._files(store.id) if f.status == "completed"}
            allowed = {
                fid for fid, f in files.items() if filters is None or matches(filters, f.attributes or {})
            }
            async with self._locks[store.id]:
                collection = await self._collection(store.id)
                hits = [h for v in vectors for h in collection.search(v, k, allowed)]
            for chunk, score in hits:
                if score < score_threshold:
                    continue
                key = (chunk.file_id, chunk.sha256)
                if key in best and best[key][0] >= score:
                    continue
                filename = names.get(chunk.file_id) or self._filename(chunk.file_id)
                names[chunk.file_id] = filename
                best[key] = (
                    score,
                    SearchResult(
                        file_id=chunk.file_id,
                        filename=filename,
                        score=round(score, 6),
                        attributes=files[chunk.file_id].attributes,
                        content=[TextContent(text=chunk.text)],
                    ),
                )
            self._touch(store.id)
        return [r for _, r in sorted(best.values(), key=lambda x: -x[0])][:k]

    # Ingestion -------------------------------------------------------------------------------------
    def resume(self) -> int:
        """Restart the ingestion of files left `in_progress` by a previous process."""
        with self.ctx.db.session() as s:
            pending = list(
                s.scalars(select(VectorStoreFileRow).where(VectorStoreFileRow.status == "in_progress"))
            )
        for f in pending:
            self._start(f.store_id, f.file_id)
        return len(pending)

    async def wait_idle(self) -> None:
        """Until every ingestion started so far has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start(self, store_id: str, file_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._ingest(store_id, file_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ingest(self, store_id: str, file_id: str) -> None:
        try:
            with self.ctx.db.session() as s:
                row = s.get(VectorStoreFileRow, (store_id, file_id))
                file = s.get(FileRow, file_id)
            if row is None or row.status != "in_progress":
                return
            if file is None:
                raise LoadError("the file was deleted from /v1/files")
            data = await asyncio.to_thread(self.ctx.store.get_bytes, file.key, file.sha256)
            async with self._locks[store_id]:
                known = set((await self._collection(store_id)).shas)
            s = self.ctx.settings
            prepared = await self.runner.run(
                prepare_file,
                file.filename,
                data,
                row.chunk_max_tokens,
                row.chunk_overlap_tokens,
                known,
                str(s.embedding_model) if s.embedding_model else None,
                s.embedding_dtype,
            )
            async with self._locks[store_id]:
                with self.ctx.db.session() as db:
                    current = db.get(VectorStoreFileRow, (store_id, file_id))
                if current is None or current.status != "in_progress":
                    return  # removed or cancelled meanwhile
                collection = await self._collection(store_id)
                used = collection.add_file(file_id, prepared.chunks, prepared.new_vectors)
                await self._save(store_id, collection)
                self._finish(store_id, file_id, "completed", usage_bytes=used)
        except LoadError as exc:
            code = "unsupported_file" if "unsupported file type" in str(exc) else "invalid_file"
            self._finish(store_id, file_id, "failed", error={"code": code, "message": str(exc)})
        except Exception as exc:  # an infrastructure failure fails this file only
            log.exception("ingestion of %s into %s failed", file_id, store_id)
            error = {"code": "server_error", "message": f"{type(exc).__name__}: {exc}"}
            self._finish(store_id, file_id, "failed", error=error)

    def _finish(
        self, store_id: str, file_id: str, status: str, usage_bytes: int = 0, error: dict | None = None
    ) -> None:
        with self.ctx.db.session() as s:
            row = s.get(VectorStoreFileRow, (store_id, file_id))
            if row is not None and row.status == "in_progress":
                row.status, row.usage_bytes, row.last_error = status, usage_bytes, error

    # Helpers ---------------------------------------------------------------------------------------
    async def _collection(self, store_id: str) -> Collection:
        """The store's index and chunks: cached, else read from the object store, else a new one."""
        if store_id not in self._collections:
            try:
                objects = await asyncio.to_thread(self._read, store_id)
                self._collections[store_id] = Collection.from_objects(objects)
            except ObjectNotFound:
                dim = await asyncio.to_thread(lambda: self._embedder.dimension)
                self._collections[store_id] = Collection(dim)
        return self._collections[store_id]

    def _read(self, store_id: str) -> dict[str, bytes]:
        from rag.collection import CHUNKS_OBJECT, INDEX_OBJECT

        return {
            name: self.ctx.store.get_bytes(prefix(store_id) + name) for name in (INDEX_OBJECT, CHUNKS_OBJECT)
        }

    async def _save(self, store_id: str, collection: Collection) -> None:
        objects = collection.to_objects()
        for name, data in objects.items():
            await asyncio.to_thread(self.ctx.store.put_bytes, prefix(store_id) + name, data)

    def _files(self, store_id: str) -> list[VectorStoreFileRow]:
        with self.ctx.db.session() as s:
            return list(
                s.scalars(
                    select(VectorStoreFileRow)
                    .where(VectorStoreFileRow.store_id == store_id)
                    .order_by(VectorStoreFileRow.created_at.desc(), VectorStoreFileRow.file_id)
                )
            )

    def _file(self, tenant: str, file_id: str, param: str) -> FileRow:
        from service.files import FileService

        row = FileService(self.ctx).get(tenant, file_id, param=param)
        if row.purpose not in PURPOSES:
            raise ApiError(
                400,
                f"File '{file_id}' has purpose '{row.purpose}'; vector stores take files uploaded with "
                f"purpose 'assistants' ({', '.join(SUPPORTED)}).",
                param=param,
                code="invalid_file",
            )
        return row

    def _filename(self, file_id: str) -> str:
        with self.ctx.db.session() as s:
            row = s.get(FileRow, file_id)
        return row.filename if row else ""

    def _touch(self, store_id: str) -> None:
        with self.ctx.db.session() as s:
            s.get(VectorStoreRow, store_id).last_active_at = now()


def _counts(files: list[VectorStoreFileRow]) -> FileCounts:
    counts = FileCounts(total=len(files))
    for f in files:
        setattr(counts, f.status, getattr(counts, f.status) + 1)
    return counts
