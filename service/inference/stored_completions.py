"""The chat completions a tenant stored (`store: true` on a chat completion, as at OpenAI): each with the
messages and tools it was asked with, listed by model and metadata, read back with its messages, its
metadata changed, deleted by the tenant or once older than the retention. What they are for: reviewing
what a model answered, evaluating on real traffic, and turning a stronger model's answers into fine-tuning
data for a smaller one (`export`: distillation)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from sqlalchemy import delete, select

from service.inference.kept import KeptRecords, page_items, size_of
from service.platform.db import ChatCompletionRow
from service.platform.db.filters import where_metadata
from service.platform.errors import ApiError
from service.protocol.chat import StoredCompletionsExport, StoredCompletionsExported, StoredCompletionsFilter
from service.protocol.common import MetadataFilter


@dataclass(frozen=True)
class StoredChat:
    id: str
    request: dict  # the messages and tools as the client sent them
    completion: dict  # the chat.completion as it was answered
    metadata: dict[str, str]


MATCHING_PAGE = 500  # stored chats read from the database at a time


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

    def matching(self, tenant: str, which: StoredCompletionsFilter) -> Iterator[StoredChat]:
        """The tenant's stored chats that match, oldest first (at most `which.limit`), read from the
        database a page at a time: an export may take a hundred thousand."""
        q = select(ChatCompletionRow).where(ChatCompletionRow.tenant_id == tenant)
        if which.model is not None:
            q = q.where(ChatCompletionRow.model == which.model)
        if which.created_after is not None:
            q = q.where(ChatCompletionRow.created_at >= which.created_after)
        if which.created_before is not None:
            q = q.where(ChatCompletionRow.created_at < which.created_before)
        wanted = MetadataFilter(which.metadata) if which.metadata else None
        q = where_metadata(q, ChatCompletionRow.meta, wanted)
        left, after = which.limit, None
        while left is None or left > 0:
            rows, more = self.db.page(q, after, MATCHING_PAGE if left is None else min(MATCHING_PAGE, left))
            for r in rows:
                yield StoredChat(r.id, r.request, r.completion, r.meta or {})
            if not more:
                return
            after = rows[-1].id
            left = None if left is None else left - len(rows)

    def export(self, tenant: str, which: StoredCompletionsExport) -> StoredCompletionsExported:
        """The matching chats as a fine-tuning file of the tenant (purpose `fine-tune`): one chat a line,
        its messages as sent and then its answer (see `training_example`). The lines go to a temporary
        file as the chats are read, and are uploaded from there."""
        with tempfile.TemporaryFile() as out:
            exported, matched = self._write_examples(tenant, which, out)
            if not exported:
                why = (
                    f"none of the {matched} that match has an answer to learn from (answers cut off by "
                    "max_tokens, or empty, are left out)"
                    if matched
                    else "none matches (chats are stored with store: true)"
                )
                raise ApiError(
                    400, f"No training data: of your stored chat completions, {why}.", code="no_training_data"
                )
            self.files.check_room(tenant, out.tell())
            out.seek(0)
            file = self.files.create_from(tenant, which.filename, "fine-tune", out)
        return StoredCompletionsExported(
            file_id=file.id,
            filename=file.filename,
            bytes=file.bytes,
            exported=exported,
            skipped=matched - exported,
        )

    def _write_examples(self, tenant: str, which: StoredCompletionsExport, out: BinaryIO) -> tuple[int, int]:
        """Write the matching chats' training examples to `out` as JSONL, refusing an export past the file
        limit as soon as it passes it. Returns (examples written, chats matched)."""
        exported = matched = 0
        limit = self.files.max_bytes
        for chat in self.matching(tenant, which):
            matched += 1
            example = training_example(chat)
            if example is None:
                continue
            line = (json.dumps(example, ensure_ascii=False) + "\n").encode()
            if limit and out.tell() + len(line) > limit:
                raise ApiError(
                    400,
                    f"The chats that match make more than the file limit of {limit} bytes "
                    f"(TUNESERVE_MAX_FILE_BYTES); the first {exported} fit. Export fewer at a time with "
                    "`limit`, `created_after` / `created_before` or `metadata`.",
                    param="limit",
                    code="file_too_large",
                )
            out.write(line)
            exported += 1
        return exported, matched

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
        return page_items(messages, after, limit, order)

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


def training_example(chat: StoredChat) -> dict | None:
    """One line of chat fine-tuning data: the messages as the client sent them, then the stored answer
    (its first choice), and the tools it was asked with. None for an answer that cannot teach: cut off by
    `max_tokens` (finish_reason "length"), or empty."""
    choices = chat.completion.get("choices") or []
    if not choices or choices[0].get("finish_reason") == "length":
        return None
    answer = choices[0].get("message") or {}
    reply = {"role": "assistant"}
    if answer.get("content"):
        reply["content"] = answer["content"]
    if answer.get("tool_calls"):
        reply["tool_calls"] = answer["tool_calls"]
    if len(reply) == 1:
        return None
    tools = {"tools": chat.request["tools"]} if chat.request.get("tools") else {}
    return {"messages": [*chat.request["messages"], reply], **tools}
