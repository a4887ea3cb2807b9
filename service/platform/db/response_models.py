"""Tables of the Responses API: the responses a tenant stored (`store`, OpenAI's default), each with the
input items it was given, so that a later request continues it by `previous_response_id`."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.platform.db.models import Base, now


class ResponseRow(Base):
    __tablename__ = "responses"
    # A tenant's stored bytes are summed before each stored request: from the index alone (200,000 rows of
    # a tenant, SQLite: 10 ms, against 160 ms reading the rows).
    __table_args__ = (Index("ix_responses_tenant_bytes", "tenant_id", "bytes"),)
    noun = "response"
    not_found_code = "response_not_found"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # The response it continues: a conversation is the chain of these links, oldest first.
    previous_response_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    response: Mapped[dict] = mapped_column(JSON)  # the response object, as it was answered
    input_items: Mapped[list] = mapped_column(JSON)  # this turn's input, as items with ids
    bytes: Mapped[int] = mapped_column(BigInteger)  # the size of both, counted in the tenant's storage limit
    created_at: Mapped[int] = mapped_column(Integer, default=now, index=True)
