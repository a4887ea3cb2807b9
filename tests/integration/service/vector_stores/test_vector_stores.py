"""Vector stores through the official openai client, on both databases (`feature_stack`): ingested as Ray
tasks, questions whose answer is known retrieve the right passage, filters, bad files, deletion, dedup,
tenancy. Chat and evals with retrieval: test_retrieval.py; a restart: test_durability.py."""

from __future__ import annotations

from pydoc_data.topics import topics

import openai
import pytest

from tests.integration.helpers import RunningStack
from tests.integration.service.vector_stores.reference import (
    QUESTIONS,
    reference_store,
    search,
    upload,
    wait,
)


@pytest.fixture(scope="module")
def client(feature_client: openai.OpenAI) -> openai.OpenAI:
    """Every test here runs on SQLite and on PostgreSQL."""
    return feature_client


@pytest.fixture(scope="module")
def reference(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    return reference_store(client)


def test_known_questions_retrieve_the_right_passage(client: openai.OpenAI, reference: tuple) -> None:
    store_id, _ = reference
    hits_at_1 = 0
    for question, statement in QUESTIONS.items():
        results = search(client, store_id, question, max_num_results=3)
        names = [r.filename for r in results]
        assert f"{statement}.txt" in names, (question, names)
        hits_at_1 += names[0] == f"{statement}.txt"
        assert results[0].score >= results[-1].score and results[0].content[0].type == "text"
    assert hits_at_1 >= len(QUESTIONS) - 2  # and every one is in the top 3


def test_filters_on_attributes(client: openai.OpenAI, reference: tuple) -> None:
    store_id, _ = reference
    loops = search(client, store_id, "a null operation", filters={"type": "eq", "key": "loop", "value": True})
    assert loops and {r.attributes["statement"] for r in loops} <= {"break", "continue", "while"}
    either = {
        "type": "or",
        "filters": [
            {"type": "eq", "key": "statement", "value": "del"},
            {"type": "in", "key": "statement", "value": ["global"]},
        ],
    }
    assert {r.filename for r in search(client, store_id, "names", filters=either)} == {
        "del.txt",
        "global.txt",
    }
    late = search(client, store_id, "a statement", filters={"type": "gte", "key": "position", "value": 8})
    assert late and {r.filename for r in late} <= {"import.txt", "while.txt"}
    early = search(client, store_id, "a statement", filters={"type": "lt", "key": "position", "value": 8})
    assert early and not {r.filename for r in early} & {"import.txt", "while.txt"}
    with pytest.raises(openai.BadRequestError) as err:
        search(client, store_id, "x", filters={"type": "like", "key": "a", "value": 1})
    assert err.value.body["param"] == "filters"


def test_bad_files_fail_alone(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="mixed")
    good = upload(client, "good.md", b"# Herons\n\nHerons are long-legged wading birds.")
    bad = {
        upload(client, "scan.pdf", b"%PDF-1.4 not really a pdf"): "cannot read this .pdf",
        upload(client, "empty.txt", b" \n"): "no text",
        upload(client, "tool.exe", b"MZ\x90\x00"): "unsupported file type",
    }
    client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[good, *bad])
    store = wait(client, store.id)
    assert store.file_counts.completed == 1 and store.file_counts.failed == 3
    for fid, why in bad.items():
        f = client.vector_stores.files.retrieve(fid, vector_store_id=store.id)
        assert f.status == "failed" and why in f.last_error.message
    assert search(client, store.id, "wading birds")[0].file_id == good
    failed = client.vector_stores.files.list(store.id, filter="failed").data
    assert {f.id for f in failed} == set(bad)


def test_deleting_a_file_removes_its_chunks(client: openai.OpenAI, reference: tuple) -> None:
    store = client.vector_stores.create(name="deletion")
    ids = [upload(client, f"{n}.txt", topics[n].encode()) for n in ("pass", "break")]
    for fid in ids:
        client.vector_stores.files.create(vector_store_id=store.id, file_id=fid)
    wait(client, store.id)
    question = "Which statement is a null operation?"
    assert search(client, store.id, question)[0].filename == "pass.txt"
    assert client.vector_stores.files.delete(ids[0], vector_store_id=store.id).deleted
    assert {r.filename for r in search(client, store.id, question)} == {"break.txt"}
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_identical_content_is_embedded_once(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="dedup")
    text = topics["pass"].encode()
    for name in ("a.txt", "b.txt"):
        client.vector_stores.files.create(vector_store_id=store.id, file_id=upload(client, name, text))
        wait(client, store.id)
    results = search(client, store.id, "null operation", max_num_results=10)
    assert {r.filename for r in results} == {"a.txt", "b.txt"}  # both files found, one vector per text


def test_another_tenants_store_does_not_exist(
    client: openai.OpenAI, feature_stack: RunningStack, reference: tuple
) -> None:
    store_id, files = reference
    other = feature_stack.client(feature_stack.tenant_key("rag-other"))
    for call in (
        lambda: other.vector_stores.retrieve(store_id),
        lambda: other.vector_stores.search(store_id, query="pass"),
        lambda: other.vector_stores.delete(store_id),
        lambda: other.vector_stores.files.list(store_id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    mine = other.vector_stores.create(name="mine")
    with pytest.raises(openai.NotFoundError):  # nor its files
        other.vector_stores.files.create(vector_store_id=mine.id, file_id=files["pass"])
    assert store_id not in {s.id for s in other.vector_stores.list()}
