"""What the API process holds in memory for work over a large file: the peak of the Python heap
(tracemalloc) over the size of the file.

- `batch`: a batch created and run, over the size of its input file. The peak covers the batch's creation
  (the file checked line by line), its run (requests read, answered, answers stored in parts) and its
  output and error files. An engine answers every chat at once with a short reply (what is measured is
  the batch's own handling, not the engine).
- `export`: stored chat completions exported as a fine-tuning file (`POST /v1/chat/completions/export`),
  over the size of the file made. The chats are in the database before the measurement starts, and the
  object store keeps nothing in the process (as S3 does not).

In process: the service's app (FastAPI's TestClient) and the in-memory object store of the unit tests,
whose copy of an uploaded file is there before the measurement starts and is not counted. Run it on two
commits back to back to compare them.

    .venv/bin/python bench/bench_memory.py batch [--requests 1000] [--kb 40]     # ~1 min on 2 cores
    .venv/bin/python bench/bench_memory.py export [--requests 5000] [--kb 8]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from service.api.app import create_app  # noqa: E402
from service.batches.lines import jsonl  # noqa: E402
from service.platform.auth import ADMIN_TENANT  # noqa: E402
from service.platform.settings import DEFAULT_BASE_MODEL  # noqa: E402
from service.platform.storage import ObjectInfo  # noqa: E402
from tests.helpers import ADMIN, USAGE, FakeEngine, MemoryStore, auth, offline_settings  # noqa: E402


class ShortAnswers(FakeEngine):
    """A four-word answer to every chat, at once; it keeps nothing of what it was asked."""

    async def generate(self, endpoint, model, body):
        choice = {"index": 0, "message": {"role": "assistant", "content": "four words, no more"}}
        return {"object": "chat.completion", "model": model.id, "choices": [choice], "usage": USAGE}


def measure(requests: int, kb: int) -> tuple[float, float, float]:
    """(input MB, peak heap MB over the baseline, seconds) for one batch."""
    text = "x" * (kb * 1024)
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": DEFAULT_BASE_MODEL, "messages": [{"role": "user", "content": f"{i} {text}"}]},
        }
        for i in range(requests)
    ]
    data = jsonl(lines)
    del lines
    with tempfile.TemporaryDirectory() as tmp:
        settings = offline_settings(Path(tmp), max_file_bytes=len(data) + 1)
        app = create_app(settings, store=MemoryStore(), engine=ShortAnswers({DEFAULT_BASE_MODEL}))
        with TestClient(app, headers=auth(ADMIN)) as client:
            upload = client.post(
                "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
            ).json()
            size = len(data)
            del data
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            body = {
                "input_file_id": upload["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            }
            batch = client.post("/v1/batches", json=body).json()
            while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
                time.sleep(0.05)
                batch = client.get(f"/v1/batches/{batch['id']}").json()
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            counts = batch["request_counts"]
            assert batch["status"] == "completed" and counts["completed"] == requests, batch
    return size / 2**20, peak / 2**20, seconds


class OffProcessStore(MemoryStore):
    """Where the service's objects really go (S3, outside the API's process): what is uploaded is read a
    part at a time and not kept, so that the peak is the API's own."""

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> ObjectInfo:
        self.objects[key] = b""
        return ObjectInfo(key, len(data), etag="", sha256=hashlib.sha256(data).hexdigest())

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        digest, size = hashlib.sha256(), 0
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        self.objects[key] = b""
        return ObjectInfo(key, size, etag="", sha256=digest.hexdigest())


def measure_export(chats: int, kb: int) -> tuple[float, float, float]:
    """(file MB, peak heap MB over the baseline, seconds) for one export of `chats` stored chats."""
    text = "x" * (kb * 1024)
    with tempfile.TemporaryDirectory() as tmp:
        store, engine = OffProcessStore(), ShortAnswers({DEFAULT_BASE_MODEL})
        app = create_app(offline_settings(Path(tmp)), store=store, engine=engine)
        with TestClient(app, headers=auth(ADMIN)) as client:
            completions = app.state.services.completions
            answer = {"index": 0, "message": {"role": "assistant", "content": "four words, no more"}}
            for i in range(chats):
                request = {
                    "model": DEFAULT_BASE_MODEL,
                    "messages": [{"role": "user", "content": f"{i} {text}"}],
                }
                completion = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": DEFAULT_BASE_MODEL}
                completion |= {"created": 0, "choices": [{**answer, "finish_reason": "stop"}], "usage": USAGE}
                completions.save(ADMIN_TENANT, request, None, completion)
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            made = client.post("/v1/chat/completions/export", json={}).json()
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
            assert made.get("exported") == chats, made
    return made["bytes"] / 2**20, peak / 2**20, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("batch", "export"))
    parser.add_argument("--requests", type=int, help="requests of the batch, or stored chats to export")
    parser.add_argument("--kb", type=int, help="each request's or chat's message, in KB")
    args = parser.parse_args()
    defaults = {"batch": (1000, 40), "export": (5000, 8)}[args.what]
    n, kb = args.requests or defaults[0], args.kb or defaults[1]
    size, peak, seconds = (measure if args.what == "batch" else measure_export)(n, kb)
    print(f"| {args.what}: items x KB | file | peak heap | peak / file | seconds |")
    print("|---|---:|---:|---:|---:|")
    print(f"| {n} x {kb} | {size:.1f} MB | {peak:.1f} MB | {peak / size:.2f} | {seconds:.1f} |")
    print(json.dumps({"file_mb": round(size, 1), "peak_mb": round(peak, 1), "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
