"""Tables of vector stores: the stores, their files and file batches. Chunks and vectors live in the object
store (`vector_stores/<id>/`), beside the FAISS index; these rows are the metadata."""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.platform.db.models import Base, now


class VectorStoreRow(Base):
    __tablename__ = "vector_stores"
    noun = "vector store"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    chunk_max_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    last_active_at: Mapped[int] = mapped_column(Integer, default=now)


class VectorStoreFileRow(Base):
    __tablename__ = "vector_store_files"
    noun = "vector store file"
    page_order = ("created_at", "file_id")
    page_cursor = "file_id"
    store_id: Mapped[str] = mapped_column(ForeignKey("vector_stores.id"), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    last_error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    attributes: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    chunk_max_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


class FileBatchRow(Base):
    __tablename__ = "vector_store_file_batches"
    noun = "file batch"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("vector_stores.id"), index=True)
    cancelled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
