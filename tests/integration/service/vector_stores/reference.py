"""The vector store the retrieval tests share: ten chapters of Python's own language reference
(`pydoc_data.topics`, shipped with every Python; PSF licence), and questions whose answer is known."""

from __future__ import annotations

import time
from pydoc_data.topics import topics

import openai

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
    """The store once no file of it is being ingested."""
    deadline = time.monotonic() + timeout
    while (store := client.vector_stores.retrieve(store_id)).file_counts.in_progress:
        assert time.monotonic() < deadline, store.file_counts
        time.sleep(0.5)
    return store


def search(client: openai.OpenAI, store_id: str, query: str, **kw: object) -> list:
    return client.vector_stores.search(store_id, query=query, **kw).data


def reference_store(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    """A store of the ten statements, ingested as one file batch with attributes; its id and file ids."""
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
