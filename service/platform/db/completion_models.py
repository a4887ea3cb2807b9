"""Tables of stored chat completions: the chat completions a tenant asked to keep (`store: true`), each with
the request's messages and tools and the answer, found again by model and metadata (to review, evaluate,
or export as fine-tuning data: distillation)."""

from __future__ import annotations

import time

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.platform.db.models import Base, now


class ChatCompletionRow(Base):
    __tablename__ = "chat_completions"
    __table_args__ = (
        # Summed before each stored request (the tenant's storage limit), from the index alone.
        Index("ix_chat_completions_tenant_bytes", "tenant_id", "bytes"),
        Index("ix_chat_completions_tenant_stored", "tenant_id", "stored_ns"),
    )
    noun = "chat completion"
    not_found_code = "chat_completion_not_found"
    # Oldest first to the nanosecond: vLLM's ids are random, so (seconds, id) would mix up a second's.
    page_order = ("stored_ns", "id")
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    model: Mapped[str] = mapped_column(String(300))
    # `metadata` is the declarative base's own attribute: the column keeps OpenAI's name.
    meta: Mapped[dict] = mapped_column("metadata", JSON)
    request: Mapped[dict] = mapped_column(JSON)  # the request's messages and tools, as the client sent them
    completion: Mapped[dict] = mapped_column(JSON)  # the chat.completion object, as it was answered
    bytes: Mapped[int] = mapped_column(BigInteger)  # the size of both, counted in the tenant's storage limit
    created_at: Mapped[int] = mapped_column(Integer, default=now, index=True)
    stored_ns: Mapped[int] = mapped_column(BigInteger, default=time.time_ns)
