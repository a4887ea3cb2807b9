"""POST /v1/embeddings with the real embedder (all-MiniLM-L6-v2 ships in a package), called the way users
call it: the official openai client and LangChain's OpenAIEmbeddings, over the app in this process."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from rag.ingest import embedder
from service.api.app import create_app
from tests.helpers import ADMIN, assert_openai_error, auth, offline_settings

MODEL = "all-MiniLM-L6-v2"
TEXTS = ["Owls hunt at night.", "Bread rises because yeast makes gas.", "Comets have icy cores."]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    with TestClient(create_app(offline_settings(tmp_path_factory.mktemp("emb")))) as c:
        yield c


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return embedder(None, "auto").embed(TEXTS)  # what vector stores embed with


def openai_client(client: TestClient) -> OpenAI:
    return OpenAI(base_url=f"{client.base_url}/v1", api_key=ADMIN, http_client=client)


def test_the_official_client_gets_the_vector_stores_vectors(client, reference):
    api = openai_client(client)
    got = api.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64 and decodes it
    assert got.model == MODEL and [d.index for d in got.data] == [0, 1, 2]
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), reference, atol=1e-6)
    assert got.usage.prompt_tokens == got.usage.total_tokens > len(" ".join(TEXTS).split())
    floats = api.embeddings.create(model=MODEL, input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, reference[1], atol=1e-6)
    assert len(floats.data[0].embedding) == 384


def test_langchain_builds_a_faiss_store_that_retrieves_the_right_text(client):
    from langchain_community.vectorstores import FAISS
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{client.base_url}/v1",
        api_key=ADMIN,
        http_client=client,
        check_embedding_ctx_length=False,  # send texts, not tiktoken's token ids
    )
    store = FAISS.from_texts(TEXTS, embeddings)
    assert store.similarity_search("When do owls look for prey?", k=1)[0].page_content == TEXTS[0]
    assert store.similarity_search("What is inside a comet?", k=1)[0].page_content == TEXTS[2]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"model": "text-embedding-3-small", "input": "x"}, 404, "model", MODEL),
        ({"model": MODEL, "input": [[101, 2054]]}, 400, "input", "check_embedding_ctx_length=False"),
        ({"model": MODEL, "input": []}, 400, "input", "empty"),
        ({"model": MODEL, "input": ["fine", "  "]}, 400, "input", "input[1]"),
        ({"model": MODEL, "input": ["fine", "word " * 400]}, 400, "input", "input[1] is"),
        ({"model": MODEL, "input": "x", "dimensions": 128}, 400, "dimensions", "384"),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format", ""),
    ],
)
def test_a_bad_request_is_a_precise_error(client, body, status, param, words):
    resp = client.post("/v1/embeddings", json=body, headers=auth(ADMIN))
    error = assert_openai_error(resp, status)
    assert error["param"] == param and words in error["message"]


def test_a_key_is_required(client):
    assert client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}).status_code == 401
