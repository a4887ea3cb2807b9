"""The chat completions a tenant stored (`store: true` on a chat completion, as at OpenAI): each with the
messages and tools it was asked with, listed by model and metadata, read back with its messages, its
metadata changed, deleted by the tenant or once older than the retention. What they are for: reviewing
what a model answered, and turning a stronger model's answers into fine-tuning data for a smaller one
(`tuneserve completions export`: distillation)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from service.inference.kept import KeptRecords, size_of
from service.platform.db import ChatCompletionRow
from service.platform.db.filters import where_metadata
from service.protocol.common import MetadataFilter


@dataclass(frozen=True)
class StoredChat:
    id: str
    request: dict  # the messages and tools as the client sent them
    completion: dict  # the chat.completion as it was answered
    metadata: dict[str, str]


class StoredCompletions(KeptRecords):
    table = ChatCompletionRow

    def save(self, tenant: str, request: dict, metadata: dict[str, str] | None, completion: dict) -> None:
        """Keep an answered chat: `request` holds the messages and tools as the client sent them."""
        row = ChatCompletionRow(
            id=completion["id"],
            tenant_id=tenant,
            model=str(completion.get("model") or request.get("model")),
            meta=metadata or {},
            request=request,
            completion=completion,
            bytes=size_of(request) + size_of(completion),
        )
        with self.db.session() as s:
            s.merge(row)  # an engine that repeats an id replaces, never fails the answered request

    def get(self, tenant: str, completion_id: str) -> dict:
        return _as_api(self._row(tenant, completion_id))

    def list(
        self,
        tenant: str,
        model: str | None,
        metadata: MetadataFilter | None,
        after: str | None,
        limit: int,
        order: str,
    ) -> tuple[list[dict], bool]:
        """One page of the tenant's stored completions, oldest first unless `order` is "desc"."""
        q = select(ChatCompletionRow).where(ChatCompletionRow.tenant_id == tenant)
        if model is not None:
            q = q.where(ChatCompletionRow.model == model)
        q = where_metadata(q, ChatCompletionRow.meta, metadata)
        rows, more = self.db.page(q, after, limit, descending=order == "desc")
        return [_as_api(r) for r in rows], more

    def matching(
        self,
        tenant: str,
        model: str | None = None,
        metadata: dict[str, str] | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        limit: int | None = None,
    ) -> list[StoredChat]:
        """The tenant's stored chats that match, oldest first (at most `limit`): an eval's items."""
        q = select(ChatCompletionRow).where(ChatCompletionRow.tenant_id == tenant)
        if model is not None:
            q = q.where(ChatCompletionRow.model == model)
        if created_after is not None:
            q = q.where(ChatCompletionRow.created_at >= created_after)
        if created_before is not None:
            q = q.where(ChatCompletionRow.created_at < created_before)
        q = where_metadata(q, ChatCompletionRow.meta, MetadataFilter(metadata) if metadata else None)
        rows, _ = self.db.page(q, limit=limit)
        return [StoredChat(r.id, r.request, r.completion, r.meta or {}) for r in rows]

    def update(self, tenant: str, completion_id: str, metadata: dict[str, str] | None) -> dict:
        """Replace the completion's metadata (the only thing that can change)."""
        self._row(tenant, completion_id)
        with self.db.session() as s:
            row = s.get(ChatCompletionRow, completion_id)
            row.meta = metadata or {}
            return _as_api(row)

    def delete(self, tenant: str, completion_id: str) -> None:
        self._row(tenant, completion_id)
        with self.db.session() as s:
            s.execute(delete(ChatCompletionRow).where(ChatCompletionRow.id == completion_id))

    def messages(
        self, tenant: str, completion_id: str, after: str | None, limit: int, order: str
    ) -> tuple[list[dict], bool]:
        """One page of the messages the completion was asked with (`order` "asc" or "desc"), each with an
        id, after the message `after`; with whether more follow."""
        row = self._row(tenant, completion_id)
        messages = [_stored_message(f"{row.id}-{i}", m) for i, m in enumerate(row.request["messages"])]
        if order == "desc":
            messages = messages[::-1]
        ids = [m["id"] for m in messages]
        start = ids.index(after) + 1 if after in ids else 0
        return messages[start : start + limit], start + limit < len(messages)

    def _row(self, tenant: str, completion_id: str) -> ChatCompletionRow:
        return self.db.get_or_404(ChatCompletionRow, completion_id, "completion_id", tenant_id=tenant)


def _as_api(row: ChatCompletionRow) -> dict:
    """The stored chat.completion with its metadata, and the tools it was asked with if any."""
    tools = {"tools": row.request["tools"]} if row.request.get("tools") else {}
    return {**row.completion, "metadata": row.meta or {}, **tools}


def _stored_message(message_id: str, message: dict) -> dict:
    """A request message as OpenAI lists it: with an id, and a content given as parts also as
    `content_parts` (its text parts joined as `content`)."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return {**message, "id": message_id, "content": text or None, "content_parts": content}
    return {**message, "id": message_id, "content_parts": None}
