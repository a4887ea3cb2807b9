"""Vector stores against the running stack, with the official openai client: chapters of Python's own
language reference (`pydoc_data.topics`, shipped with every Python; PSF licence) ingested as Ray tasks,
questions whose answer is known retrieve the right passage, filters, deletion, restart, chat citations."""

from __future__ import annotations

import time
from pydoc_data.topics import topics

import openai
import pytest

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import RunningStack, make_stack

STATEMENTS = ["pass", "break", "continue", "assert", "return", "raise", "del", "global", "import", "while"]
QUESTIONS = {
    "Which statement is a null operation, where nothing happens when it is executed?": "pass",
    "How do I terminate the nearest enclosing loop?": "break",
    "What makes a loop continue with its next cycle?": "continue",
    "How do I insert debugging assertions into a program?": "assert",
    "How does a function leave and give a value back to its caller?": "return",
    "How do I delete a name binding?": "del",
}


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def wait(client: openai.OpenAI, store_id: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while (store := client.vector_stores.retrieve(store_id)).file_counts.in_progress:
        assert time.monotonic() < deadline, store.file_counts
        time.sleep(0.5)
    return store


@pytest.fixture(scope="module")
def reference(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    """A store of ten statements of the language reference, ingested as one file batch."""
    store = client.vector_stores.create(name="python-reference")
    files = {name: upload(client, f"{name}.txt", topics[name].encode()) for name in STATEMENTS}
    batch = client.vector_stores.file_batches.create(
        vector_store_id=store.id,
        files=[
            {
                "file_id": fid,
                "attributes": {
                    "statement": name,
                    "loop": name in ("break", "continue", "while"),
                    "position": STATEMENTS.index(name),
                },
            }
            for name, fid in files.items()
        ],
    )
    assert batch.status == "in_progress"
    wait(client, store.id)
    batch = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert batch.status == "completed" and batch.file_counts.completed == len(STATEMENTS)
    return store.id, files


def search(client: openai.OpenAI, store_id: str, query: str, **kw: object) -> list:
    return client.vector_stores.search(store_id, query=query, **kw).data


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
    client: openai.OpenAI, stack: RunningStack, reference: tuple
) -> None:
    store_id, files = reference
    other = stack.client(stack.tenant_key("rag-other"))
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


def test_chat_with_retrieval_cites_the_passage(client: openai.OpenAI, reference: tuple) -> None:
    store_id, _ = reference
    question = "What does the pass statement do?"
    reply = client.chat.completions.create(
        model=DEFAULT_BASE_MODEL,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=60,
        extra_body={"retrieval": {"vector_store_ids": [store_id], "max_num_results": 2}},
    )
    citations = reply.model_extra["citations"]
    assert citations[0]["filename"] == "pass.txt" and "null operation" in citations[0]["text"]
    assert reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=DEFAULT_BASE_MODEL,
            messages=[{"role": "user", "content": question}],
            max_tokens=5,
            stream=True,
            extra_body={"retrieval": {"vector_store_ids": [store_id], "max_num_results": 2}},
        )
    )
    assert chunks[0].model_extra["citations"][0]["filename"] == "pass.txt"


def test_a_rag_eval_scores_retrieval_and_answers(client: openai.OpenAI, reference: tuple) -> None:
    """An eval run with `retrieval`: hit rate of the gold file among the citations, and whether the answer
    (written with the retrieved passages in the prompt) names the statement."""
    store_id, _ = reference
    ev = client.evals.create(
        name="python reference rag",
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "gold_files": {"type": "array"}},
                "required": ["question", "gold_files"],
            },
        },
        testing_criteria=[
            {"type": "retrieval", "name": "gold in top 3", "reference": "{{item.gold_files}}", "k": 3},
            {"type": "retrieval", "name": "gold first", "reference": "{{item.gold_files}}", "k": 1},
        ],
    )
    items = [{"item": {"question": q, "gold_files": [f"{name}.txt"]}} for q, name in QUESTIONS.items()]
    run = client.evals.runs.create(
        ev.id,
        data_source={
            "type": "completions",
            "model": DEFAULT_BASE_MODEL,
            "input_messages": {
                "type": "template",
                "template": [{"role": "user", "content": "{{item.question}}"}],
            },
            "sampling_params": {"temperature": 0, "max_completion_tokens": 8},
            "source": {"type": "file_content", "content": items},
            # The extension: each sample is answered with retrieval, and its citations are graded.
            "retrieval": {"vector_store_ids": [store_id], "max_num_results": 3},
        },
    )
    deadline = time.monotonic() + 300
    while (run := client.evals.runs.retrieve(run.id, eval_id=ev.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    per = {c.testing_criteria: c for c in run.per_testing_criteria_results}
    # As test_known_questions_retrieve_the_right_passage shows by search: all gold chapters in the top 3.
    assert per["gold in top 3"].passed == len(QUESTIONS), per
    assert per["gold first"].passed >= len(QUESTIONS) - 2, per
    item = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=1).data[0]
    assert item.sample.model_extra["citations"][0]["filename"].endswith(".txt")


def test_a_restart_keeps_the_index(tmp_path) -> None:
    stack = make_stack(tmp_path / "rag-restart")
    stack.up()
    try:
        client = stack.client()
        store = client.vector_stores.create(name="durable")
        for name in ("pass", "break", "assert"):
            client.vector_stores.files.create(
                vector_store_id=store.id, file_id=upload(client, f"{name}.txt", topics[name].encode())
            )
        wait(client, store.id)
        before = [(r.filename, r.score) for r in search(client, store.id, "debugging assertions")]
        stack.down()
        stack.up()
        client = stack.client()
        assert [(r.filename, r.score) for r in search(client, store.id, "debugging assertions")] == before
        assert before[0][0] == "assert.txt"
    finally:
        stack.down()
