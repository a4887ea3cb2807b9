"""Vector stores in the API process with the real loaders, splitter and embedder, and an in-memory object
store (no servers): what ingestion computes. Search quality is in the integration tier."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from openai import OpenAI

from service.api.app import create_app
from service.platform.tasks import ThreadRunner
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings


class RecordingRunner(ThreadRunner):
    """Runs tasks in a thread and keeps what each returned; with a `gate`, each task waits for it first."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.results: list = []

    async def run(self, fn, *args, cpus: float = 1):
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait)
        result = await super().run(fn, *args, cpus=cpus)
        self.results.append(result)
        return result


def upload(client: TestClient, name: str, text: bytes) -> str:
    return client.post("/v1/files", data={"purpose": "assistants"}, files={"file": (name, text)}).json()["id"]


def test_identical_content_is_embedded_once(tmp_path: Path) -> None:
    runner = RecordingRunner()
    app = create_app(offline_settings(tmp_path), tasks=runner, store=MemoryStore())
    text = b"The same words stand in two files, and the store embeds them only once. " * 30
    with TestClient(app, headers=auth(ADMIN)) as client:
        store = client.post("/v1/vector_stores", json={"name": "dedup"}).json()
        for name in ("a.txt", "b.txt"):
            file = client.post(
                "/v1/files", data={"purpose": "assistants"}, files={"file": (name, text)}
            ).json()
            path = f"/v1/vector_stores/{store['id']}/files/{file['id']}"
            client.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": file["id"]})
            deadline = time.monotonic() + 120
            while (status := client.get(path).json()["status"]) == "in_progress":
                assert time.monotonic() < deadline, "ingestion did not finish"
                time.sleep(0.05)
            assert status == "completed"
    first, second = runner.results
    shas = [c.sha256 for c in first.chunks]
    assert len(first.new_vectors) == len(set(shas)) > 0  # the first file's texts were embedded
    assert [c.sha256 for c in second.chunks] == shas and second.new_vectors == {}  # the second's were not


def test_a_store_and_its_files_change_and_a_cancelled_batch_stops(tmp_path: Path) -> None:
    gate = threading.Event()  # ingestion waits: the batch is still in progress when it is cancelled
    app = create_app(offline_settings(tmp_path), tasks=RecordingRunner(gate), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        store = client.post("/v1/vector_stores", json={"name": "docs", "metadata": {"team": "a"}}).json()
        base = f"/v1/vector_stores/{store['id']}"
        changed = client.post(base, json={"name": "handbook", "metadata": {"team": "b"}}).json()
        assert (changed["name"], changed["metadata"]) == ("handbook", {"team": "b"})
        assert client.get(base).json()["name"] == "handbook"

        single = upload(client, "single.txt", b"one")
        client.post(f"{base}/files", json={"file_id": single, "attributes": {"year": 2020}})
        updated = client.post(f"{base}/files/{single}", json={"attributes": {"year": 2024, "lang": "en"}})
        assert updated.json()["attributes"] == {"year": 2024, "lang": "en"}
        assert client.get(f"{base}/files/{single}").json()["attributes"] == {"year": 2024, "lang": "en"}

        ids = [upload(client, f"{n}.txt", b"text") for n in ("a", "b")]
        batch = client.post(f"{base}/file_batches", json={"file_ids": ids}).json()
        assert batch["status"] == "in_progress" and batch["file_counts"]["in_progress"] == 2
        listed = client.get(f"{base}/file_batches/{batch['id']}/files").json()["data"]
        assert sorted(f["id"] for f in listed) == sorted(ids)  # the batch's files, not the single one
        cancelled = client.post(f"{base}/file_batches/{batch['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["file_counts"]["cancelled"] == 2
        filtered = client.get(f"{base}/file_batches/{batch['id']}/files", params={"filter": "cancelled"})
        assert sorted(f["id"] for f in filtered.json()["data"]) == sorted(ids)
        assert client.delete(f"{base}/files/{single}").json()["deleted"]  # nothing is left to ingest
        gate.set()
        assert client.get(f"{base}/files/{ids[0]}").json()["status"] == "cancelled"
        unknown = client.get(f"{base}/file_batches/vsfb_nope/files")
        assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "batch_id"


def wait_ingested(client: TestClient, path: str) -> dict:
    deadline = time.monotonic() + 120
    while (file := client.get(path).json())["status"] == "in_progress":
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.05)
    return file


def test_a_stores_chunking_strategy_sizes_its_chunks(tmp_path: Path) -> None:
    runner = RecordingRunner()
    app = create_app(offline_settings(tmp_path), tasks=runner, store=MemoryStore())
    text = " ".join(f"Sentence number {i} says something of its own." for i in range(80)).encode()
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    with TestClient(app, headers=auth(ADMIN)) as client:
        store = client.post("/v1/vector_stores", json={"name": "small", "chunking_strategy": strategy}).json()
        file_id = upload(client, "long.txt", text)
        client.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": file_id})
        file = wait_ingested(client, f"/v1/vector_stores/{store['id']}/files/{file_id}")
        embedder = client.app.state.services.vector_stores.embedder
        # its parsed content, as the official client reads it: the chunks, in the file's order
        openai = OpenAI(base_url="http://testserver/v1", api_key=ADMIN, http_client=client)
        content = [
            item.text for item in openai.vector_stores.files.content(file_id, vector_store_id=store["id"])
        ]
        other = upload(client, "other.txt", b"not in the store")
        missing = client.get(f"/v1/vector_stores/{store['id']}/files/{other}/content")
    assert file["status"] == "completed" and file["chunking_strategy"] == strategy
    [prepared] = runner.results
    sizes = [len(embedder.tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in prepared.chunks]
    assert len(sizes) > 3 and max(sizes) <= 100  # the default (256 tokens) would make one or two chunks
    assert content == [c.text for c in prepared.chunks]
    assert " ".join(content).split() == text.decode().split()  # no overlap here: the whole text, in order
    assert_openai_error(missing, 404)


def test_files_left_in_progress_by_a_crash_are_ingested_on_start(tmp_path: Path) -> None:
    store = MemoryStore()
    stuck = threading.Event()  # never opens: the first process "dies" with its ingestion in progress
    with TestClient(
        create_app(offline_settings(tmp_path), tasks=RecordingRunner(stuck), store=store)
    ) as client:
        client.headers.update(auth(ADMIN))
        vs = client.post("/v1/vector_stores", json={"name": "s"}).json()
        file_id = upload(client, "a.txt", b"Words that were being ingested when the process died.")
        client.post(f"/v1/vector_stores/{vs['id']}/files", json={"file_id": file_id})
        path = f"/v1/vector_stores/{vs['id']}/files/{file_id}"
        assert client.get(path).json()["status"] == "in_progress"
        stuck.set()  # let the old process's thread end; its loop is gone, so it ingests nothing
    runner = RecordingRunner()
    with TestClient(
        create_app(offline_settings(tmp_path), tasks=runner, store=store), headers=auth(ADMIN)
    ) as client:
        assert wait_ingested(client, path)["status"] == "completed"
    assert len(runner.results) == 1 and runner.results[0].chunks


def _ingest(client: TestClient, store_id: str, file_id: str) -> str:
    client.post(f"/v1/vector_stores/{store_id}/files", json={"file_id": file_id})
    deadline = time.monotonic() + 120
    while (
        status := client.get(f"/v1/vector_stores/{store_id}/files/{file_id}").json()["status"]
    ) == "in_progress":
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.05)
    return status


def test_a_file_added_again_stays_searchable_and_a_deleted_file_leaves_every_store(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path), tasks=ThreadRunner(), store=MemoryStore())
    with TestClient(app, headers=auth(ADMIN)) as client:
        owls = upload(client, "owls.txt", b"Owls hunt at night and sleep by day.")
        bats = upload(client, "bats.txt", b"Bats eat insects.")
        stores = [client.post("/v1/vector_stores", json={"name": n}).json()["id"] for n in ("one", "two")]
        for store_id in stores:
            assert _ingest(client, store_id, owls) == "completed"
        assert _ingest(client, stores[0], owls) == "completed"  # again: it once failed and lost its chunks
        assert _ingest(client, stores[0], bats) == "completed"

        def found(store_id: str) -> set[str]:
            hits = client.post(f"/v1/vector_stores/{store_id}/search", json={"query": "When do owls hunt?"})
            return {h["file_id"] for h in hits.json()["data"]}

        assert found(stores[0]) == {owls, bats} and found(stores[1]) == {owls}
        assert client.delete(f"/v1/files/{owls}").json()["deleted"] is True
        assert found(stores[0]) == {bats} and found(stores[1]) == set()  # its text is found nowhere
        listed = client.get(f"/v1/vector_stores/{stores[1]}/files").json()["data"]
        assert listed == []


def test_a_store_is_one_object_and_one_saved_as_two_still_loads(tmp_path: Path) -> None:
    from rag.collection import Collection

    objects = MemoryStore()
    with TestClient(
        create_app(offline_settings(tmp_path), tasks=ThreadRunner(), store=objects), headers=auth(ADMIN)
    ) as client:
        owls = upload(client, "owls.txt", b"Owls hunt at night and sleep by day.")
        bats = upload(client, "bats.txt", b"Bats eat insects.")
        store_id = client.post("/v1/vector_stores", json={"name": "s"}).json()["id"]
        assert _ingest(client, store_id, owls) == "completed"
    prefix = f"vector_stores/{store_id}/"
    saved = {k.removeprefix(prefix) for k in objects.objects if k.startswith(prefix)}
    assert saved == {"collection.bin"}  # one write: a crash leaves the old state or the new one
    # Rewrite it as an older tuneserve saved it (index and chunks apart); a new process reads that.
    collection = Collection.from_bytes(objects.objects.pop(prefix + "collection.bin"))
    for name, data in collection.to_objects().items():
        objects.put_bytes(prefix + name, data)
    with TestClient(
        create_app(offline_settings(tmp_path), tasks=ThreadRunner(), store=objects), headers=auth(ADMIN)
    ) as client:
        assert _ingest(client, store_id, bats) == "completed"
        hits = client.post(f"/v1/vector_stores/{store_id}/search", json={"query": "When do owls hunt?"})
        assert {h["file_id"] for h in hits.json()["data"]} == {owls, bats}
    assert {k.removeprefix(prefix) for k in objects.objects if k.startswith(prefix)} == {"collection.bin"}
