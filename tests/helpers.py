"""Helpers shared by the unit tests: offline settings, keys, OpenAI's error shape, a fake engine."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from service.models.registry import ResolvedModel
from service.platform.settings import Settings
from service.platform.storage import ObjectInfo, ObjectNotFound

ADMIN = "ts-admin-test-key"


def offline_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings whose object store is down (nothing listens on port 1), which /health must report."""
    return Settings(
        data_dir=tmp_path,
        api_key=ADMIN,
        s3_endpoint_url="http://127.0.0.1:1",
        s3_access_key_id="a",
        s3_secret_access_key="b",
        **overrides,
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


class FakeEngine:
    """Echoes what it was asked; streams it as two SSE chunks."""

    def __init__(self, served: set[str]) -> None:
        self.served = served
        self.calls: list[tuple[str, ResolvedModel, dict]] = []

    def serves(self, base_model: str) -> bool:
        return base_model in self.served

    async def generate(self, endpoint: str, model: ResolvedModel, body: dict) -> dict | AsyncIterator[str]:
        self.calls.append((endpoint, model, body))
        if body.get("stream"):
            return self._stream(model.id, bool((body.get("stream_options") or {}).get("include_usage")))
        return {"object": "chat.completion", "model": model.id, "endpoint": endpoint, "usage": USAGE}

    async def _stream(self, model: str, usage: bool) -> AsyncIterator[str]:
        for piece in ("Hel", "lo"):
            yield f"data: {json.dumps({'model': model, 'delta': piece})}\n\n"
        if usage:  # as vLLM: a last chunk without choices
            yield f"data: {json.dumps({'model': model, 'choices': [], 'usage': USAGE})}\n\n"
        yield "data: [DONE]\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


class EchoEngine(FakeEngine):
    """Answers each chat with how many messages it was given and the last one's text, whole or streamed
    in chat completion chunks (as vLLM: a new id each, the model's name, all made in the same second)."""

    @staticmethod
    def _answer(body: dict) -> str:
        return f"{len(body['messages'])} messages, the last: {body['messages'][-1]['content']}"

    async def generate(self, endpoint: str, model: ResolvedModel, body: dict) -> dict | AsyncIterator[str]:
        if endpoint != "chat":
            return await super().generate(endpoint, model, body)
        self.calls.append((endpoint, model, body))
        text, head = (
            self._answer(body),
            # ids that sort against the order of the calls, as vLLM's random ones may: lists are not by id
            {"id": f"chatcmpl-{10**6 - len(self.calls)}", "created": 1, "model": model.id},
        )
        if body.get("stream"):
            return self._chunks(head, text)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": USAGE}

    async def _chunks(self, head: dict, text: str) -> AsyncIterator[str]:
        for piece, finish in ((text[:5], None), (text[5:], "stop")):
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
            yield f"data: {json.dumps({**head, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': USAGE})}\n\n"
        yield "data: [DONE]\n\n"


class MemoryStore:
    """The object store's interface over a dict (what the unit tests need of it)."""

    def __init__(self, bucket: str = "tuneserve", buckets: dict[str, MemoryStore] | None = None) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.modified: dict[str, float] = {}
        self.buckets = buckets if buckets is not None else {bucket: self}  # shared by its bucket_stores

    def bucket_store(self, bucket: str) -> MemoryStore:
        return self.buckets.setdefault(bucket, MemoryStore(bucket, self.buckets))

    def head(self, key: str) -> ObjectInfo:
        if key not in self.objects:
            raise ObjectNotFound(key)
        return ObjectInfo(key, len(self.objects[key]), etag="")

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> ObjectInfo:
        self.objects[key] = data
        self.modified[key] = time.time()
        return ObjectInfo(key, len(data), etag="", sha256=hashlib.sha256(data).hexdigest())

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return [
            ObjectInfo(k, len(v), etag="", modified=self.modified.get(k))
            for k, v in sorted(self.objects.items())
            if k.startswith(prefix)
        ]

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        return self.put_bytes(key, stream.read())

    def get_bytes(self, key: str, sha256: str | None = None) -> bytes:
        if key not in self.objects:
            raise ObjectNotFound(key)
        return self.objects[key]

    def uncheck(self, prefix: str, rel: str) -> None:
        pass  # this store keeps no checksums

    def put_folder(self, prefix: str, folder, unchecked=()) -> None:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                self.put_bytes(prefix + path.relative_to(folder).as_posix(), path.read_bytes())

    def get_folder(self, prefix: str, folder) -> Path:
        keys = [k for k in self.objects if k.startswith(prefix)]
        if not keys:
            raise ObjectNotFound(prefix)
        for key in keys:
            (Path(folder) / key[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / key[len(prefix) :]).write_bytes(self.objects[key])
        return Path(folder)

    def open(self, key: str) -> Iterator[bytes]:
        yield self.get_bytes(key)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self.objects if k.startswith(prefix)]
        for key in keys:
            del self.objects[key]
        return len(keys)


def add_job(store, job_id: str, tenant: str, created: int) -> None:
    """A queued job of `tenant` in a JobStore, with a small valid spec."""
    from service.platform.db import JobRow
    from service.protocol.fine_tuning import (
        DeepSpeedOptions,
        LoraOptions,
        ResolvedHyperparameters,
        ResourceOptions,
        TrainingSpec,
    )

    spec = TrainingSpec(
        job_id=job_id,
        tenant=tenant,
        base_model="m",
        base_model_path="/m",
        fine_tuned_model="m:x",
        training_file="f",
        training_key="k",
        training_sha256="0",
        n_train_examples=1,
        n_train_tokens=1,
        hyperparameters=ResolvedHyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1),
        learning_rate=1e-4,
        seed=0,
        lora=LoraOptions(alpha=16),
        deepspeed=DeepSpeedOptions(),
        resources=ResourceOptions(),
        max_seq_length=64,
        adapter_prefix="adapters/m/x/",
        checkpoint_prefix="jobs/x/",
    )
    store.create(
        JobRow(
            id=job_id,
            tenant_id=tenant,
            status="queued",
            model="m",
            request={},
            spec=spec.model_dump(mode="json"),
            created_at=created,
        )
    )
