"""Retrieval in chat and evals on the shared stack (the real SmolLM2 in vLLM): answers cite the passages
they were given, and an eval run grades the citations."""

from __future__ import annotations

import time

import openai
import pytest

from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.service.vector_stores.reference import QUESTIONS, reference_store


@pytest.fixture(scope="module")
def reference(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    return reference_store(client)


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


def test_the_responses_apis_file_search_is_the_same_retrieval(
    client: openai.OpenAI, reference: tuple
) -> None:
    """OpenAI's file_search tool over the tenant's vector store, through the official client: the search
    item finds the passage (its results included on request), and the answer cites its file."""
    store_id, _ = reference
    question = "What does the pass statement do?"
    search = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}
    response = client.responses.create(
        model=DEFAULT_BASE_MODEL,
        input=question,
        tools=[search],
        include=["file_search_call.results"],
        temperature=0,
        max_output_tokens=60,
    )
    found, message = response.output
    assert found.type == "file_search_call" and found.queries == [question]
    assert found.results[0].filename == "pass.txt" and "null operation" in found.results[0].text
    assert message.type == "message" and response.output_text
    assert "pass.txt" in [a.filename for a in message.content[0].annotations]
    # Streamed, with the same limit: the same answer (greedy); the last event carries the whole response
    # (`response.incomplete` where the limit cut it, which the client's stream helper does not return).
    events = list(
        client.responses.create(
            model=DEFAULT_BASE_MODEL,
            input=question,
            tools=[search],
            temperature=0,
            max_output_tokens=60,
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert "response.file_search_call.completed" in kinds
    assert (
        kinds[-1] == f"response.{response.status}" and events[-1].response.output_text == response.output_text
    )
    assert events[-1].response.output[0].results is None  # not included this time


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


def test_embeddings_are_the_vector_stores_vectors(client: openai.OpenAI) -> None:
    """The official client on the real stack gets the vectors of the embedder the stores use."""
    import numpy as np

    from rag.ingest import embedder

    texts = list(QUESTIONS)[:3]
    got = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)
    np.testing.assert_allclose(
        np.array([d.embedding for d in got.data]), embedder(None, "auto").embed(texts), atol=1e-3
    )


def test_langchain_against_the_stack_builds_a_faiss_store_that_finds_the_right_text(
    client: openai.OpenAI,
) -> None:
    """LangChain's OpenAIEmbeddings pointed at the stack's HTTP API, as a user's RAG code would."""
    from langchain_community.vectorstores import FAISS
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=str(client.base_url),
        api_key=client.api_key,
        check_embedding_ctx_length=False,  # send texts, not tiktoken's token ids
    )
    texts = ["Owls hunt at night.", "Bread rises because yeast makes gas.", "Comets have icy cores."]
    store = FAISS.from_texts(texts, embeddings)
    assert store.similarity_search("Why does dough get bigger?", k=1)[0].page_content == texts[1]
    assert store.similarity_search("What is inside a comet?", k=1)[0].page_content == texts[2]
