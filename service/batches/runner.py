"""Running batches in the API process: a batch's requests are answered through the same services as the
HTTP routes (models, adapters, images, tools, retrieval and the engine; not the per-minute rate limits,
which are for interactive traffic), a few at a time over all batches with tenants taking turns
(`TUNESERVE_BATCH_REQUESTS_IN_FLIGHT`). Answers are written in parts as they complete, so a batch resumes
after a restart with the requests it has no answer for; cancelling, expiry and a revoked key stop it
before its next PART_SIZE requests start. A running batch reads its requests a part at a time from a local
copy of its input file, so it holds a part of them in memory, not the file. When it ends, its parts become
an output file (2xx answers) and an error file (the rest), written to disk a part at a time and uploaded."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from sqlalchemy import select

from service.batches.lines import answered, iter_requests, jsonl, succeeded, unanswered, usage_of
from service.files.service import FileService
from service.inference.chat import ChatService
from service.inference.embeddings import EmbeddingService
from service.inference.responses import ResponsesService
from service.platform.auth import KeyStore
from service.platform.db import BatchRow, Database
from service.platform.db.models import now
from service.platform.errors import ApiError, root_cause, schema_error
from service.platform.fair_share import FairShare
from service.platform.ids import new_id
from service.platform.storage import ObjectStore
from service.platform.tasks import Background
from service.protocol.batches import ACTIVE_BATCH, BATCH_OUTPUT_PURPOSE
from service.protocol.chat import ChatCompletionCreate, CompletionCreate
from service.protocol.embeddings import EmbeddingCreate
from service.protocol.response_output import ItemIds, from_chat
from service.protocol.responses import ResponseCreate

log = logging.getLogger(__name__)
PART_SIZE = 64  # answers a write holds; requests started between two looks at whether the batch goes on
# A request the engine has no room for (a 503, as the official clients retry it) is asked again after these
# pauses, its slot given back meanwhile; only then is the 503 its answer.
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 16.0)
# Why requests were left unanswered, by how the batch ended.
UNANSWERED = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request was answered."),
    "expired": ("batch_expired", "The batch's completion window ended before this request was answered."),
    "failed": ("api_key_revoked", "The API key that created the batch was revoked, or its tenant disabled."),
}
# (model, tenant, start, usage, error): what a request cost, for the API's metrics; the model is None for a
# body that failed its schema (no metric series per made-up model name).
Observer = Callable[[str | None, str, float, dict | None, ApiError | None], None]


def parts_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/"


@contextlib.contextmanager
def local_copy(store: ObjectStore, key: str) -> Iterator[BinaryIO]:
    """The object `key` in a temporary file on this machine's disk, positioned at its start. The file has no
    name (it goes with its last descriptor, a crash of the process included)."""
    with tempfile.TemporaryFile(prefix="tuneserve-batch-") as copy:
        for chunk in store.open(key):
            copy.write(chunk)
        copy.seek(0)
        yield copy


def _next_part(requests: Iterator[dict]) -> list[dict]:
    """The next PART_SIZE requests (fewer at the end, none after it)."""
    return list(itertools.islice(requests, PART_SIZE))


@dataclass
class BatchRunner:
    db: Database
    store: ObjectStore
    files: FileService
    keys: KeyStore
    chat: ChatService
    embeddings: EmbeddingService
    responses: ResponsesService
    background: Background
    in_flight: int
    observe: Observer | None = None
    _share: FairShare | None = None

    def __post_init__(self) -> None:
        self._share = FairShare(self.in_flight)

    def start(self, batch_id: str) -> None:
        """Drive the batch in the background (from any thread); a batch already driven is left alone."""
        self.background.drive(batch_id, lambda: self._drive(batch_id))

    def resume(self) -> None:
        """After a restart: drive every batch that was not finished."""
        with self.db.session() as s:
            ids = list(s.scalars(select(BatchRow.id).where(BatchRow.status.in_(ACTIVE_BATCH))))
        for batch_id in ids:
            self.start(batch_id)

    async def _drive(self, batch_id: str) -> None:
        try:
            await self._run(batch_id)
        except Exception as exc:  # a batch that cannot go on fails with the reason
            log.exception("batch %s failed", batch_id)
            error = {"code": "batch_failed", "message": root_cause(exc), "param": None, "line": None}
            await asyncio.to_thread(self._fail, batch_id, error)

    async def _run(self, batch_id: str) -> None:
        """Answer the batch's requests with up to PART_SIZE of them started and not yet stored (each waits
        for a slot of the shared pool), storing each PART_SIZE answers as they complete: a slot freed by a
        short answer takes the next request at once, instead of waiting for a part's longest one. Whether
        the batch goes on is looked at before each PART_SIZE requests are started."""
        begun = await asyncio.to_thread(self._begin, batch_id)
        if begun is None:
            return
        tenant, endpoint, todo = begun
        pending: set[asyncio.Task] = set()
        finished: list[dict] = []
        try:
            while part := await asyncio.to_thread(_next_part, todo):
                if await asyncio.to_thread(self._stopping, batch_id):
                    break
                for request in part:
                    while len(pending) >= PART_SIZE:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        finished += [task.result() for task in done]
                        finished = await self._store_full_parts(batch_id, finished)
                    pending.add(asyncio.create_task(self._answer(tenant, endpoint, request)))
            if pending:
                finished += await asyncio.gather(*pending)
            finished = await self._store_full_parts(batch_id, finished)
            if finished:
                await asyncio.to_thread(self._store_part, batch_id, finished)
        finally:
            for task in pending:
                task.cancel()
            with contextlib.suppress(ValueError):  # still being read in a thread: closed when collected
                todo.close()  # deletes the local copy of the input
        await asyncio.to_thread(self._finalize, batch_id)

    async def _store_full_parts(self, batch_id: str, finished: list[dict]) -> list[dict]:
        """Store the answers in parts of PART_SIZE; those left over."""
        while len(finished) >= PART_SIZE:
            await asyncio.to_thread(self._store_part, batch_id, finished[:PART_SIZE])
            finished = finished[PART_SIZE:]
        return finished

    def _begin(self, batch_id: str) -> tuple[str, str, Generator[dict]] | None:
        """Mark the batch in progress; its requests without an answer yet, as they are read."""
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is None or row.status not in ACTIVE_BATCH:
                return None
            if row.status == "validating":
                row.status, row.in_progress_at = "in_progress", now()
            tenant, endpoint, key, going = row.tenant_id, row.endpoint, row.input_key, row.status
        if going != "in_progress":  # cancelling or finalizing: only the files are left to make
            return tenant, endpoint, (request for request in ())
        done = {line["custom_id"] for line in self._answered(batch_id)}
        return tenant, endpoint, self._unanswered(key, endpoint, done)

    def _unanswered(self, key: str, endpoint: str, done: set[str]) -> Iterator[dict]:
        """The requests of the input file `key` that are not `done`, read one at a time from a local copy
        of it, made on the first read and deleted when the reading ends or is closed."""
        with local_copy(self.store, key) as copy:
            lines = io.TextIOWrapper(copy, encoding="utf-8", newline="\n")
            yield from (r for r in iter_requests(lines, endpoint) if r["custom_id"] not in done)

    def _stopping(self, batch_id: str) -> bool:
        """Whether the batch stops before its next requests start: cancelled, deleted, past its window, or
        its key revoked."""
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is None or row.status != "in_progress":
                return True
            return time.time() > row.expires_at or not self.keys.key_valid(row.created_by_key)

    async def _answer(self, tenant: str, endpoint: str, request: dict) -> dict:
        for delay in (*RETRY_DELAYS_S, None):
            async with self._share.slot(tenant):
                status, body = await self._call(tenant, endpoint, request["body"])
            if status != 503 or delay is None:
                break
            await asyncio.sleep(delay)
        return answered(request["custom_id"], status, body, new_id)

    async def _call(self, tenant: str, endpoint: str, body: dict) -> tuple[int, dict]:
        """The endpoint's answer to one request: (status code, body), an error in OpenAI's shape."""
        start, error, result, usage = time.perf_counter(), None, None, None
        model: str | None = str(body.get("model"))
        try:
            if endpoint == "/v1/embeddings":
                embed = EmbeddingCreate.model_validate(body)
                result = (await asyncio.to_thread(self.embeddings.create, embed)).model_dump()
            elif endpoint == "/v1/responses":
                request = ResponseCreate.model_validate(body).model_dump(exclude_unset=True)
                prepared = await asyncio.to_thread(self.responses.prepare, tenant, request)
                payload, retrieval = prepared.chat.for_engine()
                with self.responses.renamed(prepared):
                    chat = await self.chat.generate("chat", payload, tenant, retrieval)
                result = from_chat(request, chat, prepared.id, ItemIds(prepared.id))
                await asyncio.to_thread(self.responses.keep, tenant, prepared, result)
                usage = chat.get("usage")
            else:
                kind = "chat" if endpoint == "/v1/chat/completions" else "completions"
                request = (ChatCompletionCreate if kind == "chat" else CompletionCreate).model_validate(body)
                payload, retrieval = request.for_engine()
                result = await self.chat.generate(kind, payload, tenant, retrieval)
        except ValidationError as exc:
            error, model = schema_error(exc.errors()), None
        except ApiError as exc:
            error = exc
        except Exception as exc:  # the engine failed this request: the batch goes on
            log.warning("a batch request failed", exc_info=True)
            error = ApiError(500, f"The request failed: {root_cause(exc)}", code="internal_error")
        if self.observe is not None:
            usage = usage or (None if result is None else result.get("usage"))
            self.observe(model, tenant, start, usage, error)
        return (200, result) if error is None else (error.status, error.body())

    def _store_part(self, batch_id: str, lines: list[dict]) -> None:
        """Write a part's answers, then count them (a crash between re-answers nothing: the part is read
        back on resume, and the counts are made from the parts)."""
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id, with_for_update=True)
            if row is None:
                return
            self.store.put_bytes(f"{parts_prefix(batch_id)}part-{row.parts:06d}.jsonl", jsonl(lines))
            row.parts += 1
            counts = dict(row.request_counts)
            ok = sum(succeeded(line) for line in lines)
            counts["completed"] += ok
            counts["failed"] += len(lines) - ok
            row.request_counts = counts
            usage = usage_of(lines)
            row.usage = {k: row.usage.get(k, 0) + v for k, v in usage.items()}

    def _answered(self, batch_id: str) -> Iterator[dict]:
        """The answers written so far, a part at a time."""
        for obj in self.store.list(parts_prefix(batch_id)):
            text = self.store.get_bytes(obj.key).decode()
            # JSONL: lines end at "\n" only (an answer may hold a raw U+2028, a line break to splitlines)
            yield from (json.loads(line) for line in text.split("\n") if line)

    def _finalize(self, batch_id: str) -> None:
        """The output and error files from the parts; the batch ends completed, cancelled, expired, or
        failed (its key revoked), with the requests it did not answer in the error file."""
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is None or row.status not in ACTIVE_BATCH:
                return
            if row.status == "cancelling":
                ending = "cancelled"
            elif not self.keys.key_valid(row.created_by_key):
                ending = "failed"
            elif time.time() > row.expires_at:
                ending = "expired"
            else:
                ending = "completed"
            if row.status == "in_progress":
                row.status, row.finalizing_at = "finalizing", now()
            tenant, key, endpoint = row.tenant_id, row.input_key, row.endpoint
        made = self._files(batch_id, tenant, key, endpoint, ending)
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            row.output_file_id, row.error_file_id = made.get("output"), made.get("error")
            row.status = ending
            setattr(row, f"{ending}_at", now())
            if ending == "failed":
                code, message = UNANSWERED["failed"]
                row.errors = [{"code": code, "message": message, "param": None, "line": None}]
            counts = dict(row.request_counts)
            counts["failed"] = counts["total"] - counts["completed"]
            row.request_counts = counts
        for obj in self.store.list(parts_prefix(batch_id)):
            self.store.delete(obj.key)

    def _files(self, batch_id: str, tenant: str, key: str, endpoint: str, ending: str) -> dict[str, str]:
        """The output file (2xx answers) and the error file (the rest, and the requests a batch that did not
        complete left unanswered) by name, each written to disk a part at a time, then uploaded; one made
        before a crash is not made again."""
        with tempfile.TemporaryDirectory(prefix="tuneserve-batch-") as tmp:
            paths = {"output": Path(tmp) / "output.jsonl", "error": Path(tmp) / "error.jsonl"}
            done: set[str] = set()
            with paths["output"].open("wb") as output, paths["error"].open("wb") as errors:
                for line in self._answered(batch_id):
                    done.add(line["custom_id"])
                    (output if succeeded(line) else errors).write(jsonl([line]))
                if ending != "completed":
                    code, message = UNANSWERED[ending]
                    for request in self._unanswered(key, endpoint, done):
                        errors.write(jsonl([unanswered(request["custom_id"], code, message, new_id)]))
            made = {}
            for name, path in paths.items():
                if not path.stat().st_size:
                    continue
                filename = f"{batch_id}_{name}.jsonl"
                file = self.files.made(tenant, filename, BATCH_OUTPUT_PURPOSE)
                if file is None:
                    with path.open("rb") as content:
                        file = self.files.create_from(tenant, filename, BATCH_OUTPUT_PURPOSE, content)
                made[name] = file.id
            return made

    def _fail(self, batch_id: str, error: dict) -> None:
        with self.db.session() as s:
            row = s.get(BatchRow, batch_id)
            if row is not None and row.status in ACTIVE_BATCH:
                row.status, row.failed_at, row.errors = "failed", now(), [error]
