"""One vector store's searchable state: its FAISS index and its chunk store, persisted as one object (an
object store replaces an object whole, so a crash leaves the old state or the new one, never a mix).

Chunk ids are int64s handed out in order; the chunk store maps each id to its file, text, SHA-256 and source
metadata. Identical chunk texts share one embedding: a chunk whose SHA-256 is already in the store reuses
that vector instead of being embedded again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from rag.chunking import Chunk
from rag.index import VectorIndex

OBJECT = "collection.bin"
# The layout before one object: written as two, read still.
INDEX_OBJECT = "index.faiss"
CHUNKS_OBJECT = "chunks.jsonl"
_MAGIC = b"tuneserve-collection-1\n"


@dataclass(frozen=True)
class StoredChunk:
    file_id: str
    text: str
    sha256: str
    metadata: dict = field(default_factory=dict)


class Collection:
    def __init__(self, dimension: int, index: VectorIndex | None = None) -> None:
        self.dimension = dimension
        self.index = index or VectorIndex(dimension)
        self.chunks: dict[int, StoredChunk] = {}
        self.next_id = 0

    # Reading ---------------------------------------------------------------------------------------
    @property
    def shas(self) -> dict[str, int]:
        """SHA-256 of a chunk text -> one chunk id holding its vector."""
        return {c.sha256: i for i, c in self.chunks.items()}

    def file_ids(self, file_id: str) -> np.ndarray:
        return np.array([i for i, c in self.chunks.items() if c.file_id == file_id], dtype=np.int64)

    def file_chunks(self, file_id: str) -> list[StoredChunk]:
        """A file's chunks in the order of its text (ids are handed out in that order)."""
        return [self.chunks[i] for i in sorted(self.file_ids(file_id).tolist())]

    def search(
        self, query: np.ndarray, k: int, files: set[str] | None = None
    ) -> list[tuple[StoredChunk, float]]:
        """The `k` chunks nearest to `query` (only of `files` when given), best first."""
        allowed = None
        if files is not None:
            allowed = np.array([i for i, c in self.chunks.items() if c.file_id in files], dtype=np.int64)
        return [(self.chunks[i], score) for i, score in self.index.search(query, k, allowed)]

    # Changes ---------------------------------------------------------------------------------------
    def add_file(self, file_id: str, chunks: list[Chunk], new_vectors: dict[str, np.ndarray]) -> int:
        """Add a file's chunks; `new_vectors` holds the vectors of texts not in the store yet (by SHA-256).
        Returns the bytes used (text + vectors). Adding a file again replaces its chunks; nothing changes
        when a vector is missing (a chunk it would share was removed meanwhile): KeyError naming it."""
        known = self.shas
        reused = {
            sha: self.index.vectors(np.array([known[sha]]))[0]
            for sha in {c.sha256 for c in chunks} - new_vectors.keys()
            if sha in known  # taken before the file's old chunks (which may hold them) are removed
        }
        missing = {c.sha256 for c in chunks} - new_vectors.keys() - reused.keys()
        if missing:
            raise KeyError(f"no vector for {len(missing)} chunk(s) of {file_id}: the store changed meanwhile")
        self.remove_file(file_id)
        ids, vectors, used = [], [], 0
        for chunk in chunks:
            vector = new_vectors[chunk.sha256] if chunk.sha256 in new_vectors else reused[chunk.sha256]
            ids.append(self.next_id)
            vectors.append(vector)
            self.chunks[self.next_id] = StoredChunk(file_id, chunk.text, chunk.sha256, chunk.metadata)
            self.next_id += 1
            used += len(chunk.text.encode()) + 4 * self.dimension
        if ids:
            self.index.add(np.array(ids, dtype=np.int64), np.stack(vectors))
        return used

    def remove_file(self, file_id: str) -> int:
        ids = self.file_ids(file_id)
        self.index.remove(ids)
        for i in ids.tolist():
            del self.chunks[i]
        return len(ids)

    # Persistence -----------------------------------------------------------------------------------
    def to_objects(self) -> dict[str, bytes]:
        lines = [json.dumps({"id": i, **asdict(c)}) for i, c in self.chunks.items()]
        header = json.dumps({"next_id": self.next_id, "dimension": self.dimension})
        return {INDEX_OBJECT: self.index.to_bytes(), CHUNKS_OBJECT: "\n".join([header, *lines]).encode()}

    def to_bytes(self) -> bytes:
        """The whole state in one blob: a marker, the index's length (8 bytes), the index, the chunks."""
        parts = self.to_objects()
        index = parts[INDEX_OBJECT]
        return _MAGIC + len(index).to_bytes(8, "little") + index + parts[CHUNKS_OBJECT]

    @classmethod
    def from_bytes(cls, data: bytes) -> Collection:
        if not data.startswith(_MAGIC):
            raise ValueError("not a tuneserve collection")
        start = len(_MAGIC) + 8
        end = start + int.from_bytes(data[len(_MAGIC) : start], "little")
        return cls.from_objects({INDEX_OBJECT: data[start:end], CHUNKS_OBJECT: data[end:]})

    @classmethod
    def from_objects(cls, objects: dict[str, bytes]) -> Collection:
        header, *lines = objects[CHUNKS_OBJECT].decode().splitlines()
        meta = json.loads(header)
        collection = cls(meta["dimension"], VectorIndex.from_bytes(objects[INDEX_OBJECT], meta["dimension"]))
        collection.next_id = meta["next_id"]
        for line in lines:
            record = json.loads(line)
            chunk_id = record.pop("id")
            collection.chunks[chunk_id] = StoredChunk(**record)
        return collection
