"""Images in chat requests, with a fake engine: what reaches the engine (always data URLs), and the 400s
and 404s for images a model or a tenant may not send. The real engine is vLLM (integration tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench import vision_task
from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
[(PNG, COLOUR)] = vision_task.pictures(1, seed=9)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine({DEFAULT_BASE_MODEL, VISION_TEST_MODEL})


@pytest.fixture
def client(tmp_path: Path, engine: FakeEngine) -> TestClient:
    bases = {m: MODELS / m for m in (DEFAULT_BASE_MODEL, VISION_TEST_MODEL)}
    settings = offline_settings(tmp_path, base_models=bases, serving_max_images_per_prompt=2)
    return TestClient(create_app(settings, engine=engine, store=MemoryStore()), headers=auth(ADMIN))


def ask(client: TestClient, *urls: str, model: str = VISION_TEST_MODEL, role: str = "user"):
    parts = [{"type": "image_url", "image_url": {"url": u, "detail": "low"}} for u in urls]
    message = {"role": role, "content": [*parts, {"type": "text", "text": vision_task.QUESTION}]}
    return client.post("/v1/chat/completions", json={"model": model, "messages": [message]})


def test_uploaded_images_reach_the_engine_as_data_urls(client: TestClient, engine: FakeEngine) -> None:
    file_id = client.post("/v1/files", data={"purpose": "vision"}, files={"file": ("p.png", PNG)}).json()[
        "id"
    ]
    url = vision_task.data_url(PNG)
    assert ask(client, file_id, url).status_code == 200
    parts = engine.calls[-1][2]["messages"][0]["content"]
    assert [p["image_url"]["url"] for p in parts[:2]] == [url, url]  # the file became its data URL
    assert parts[0]["image_url"]["detail"] == "low" and parts[2]["type"] == "text"


def test_images_a_request_may_not_send(client: TestClient, engine: FakeEngine) -> None:
    url = vision_task.data_url(PNG)
    err = assert_openai_error(ask(client, url, model=DEFAULT_BASE_MODEL), 400, "image_not_supported")
    assert "takes text only" in err["message"] and err["param"] == "messages[0].content[0].image_url"
    err = assert_openai_error(ask(client, vision_task.data_url(PNG[:50])), 400, "invalid_image")
    assert "does not decode" in err["message"]
    assert (
        "not fetched from example.com" in ask(client, "https://example.com/a.png").json()["error"]["message"]
    )
    assert_openai_error(ask(client, url, url, url), 400, "too_many_images")
    assert ask(client, url, role="assistant").status_code == 400
    other = client.post("/v1/admin/api_keys", json={"tenant": "other"}).json()["key"]
    theirs = client.post(
        "/v1/files", headers=auth(other), data={"purpose": "vision"}, files={"file": ("p.png", PNG)}
    ).json()["id"]
    assert ask(client, theirs).status_code == 404  # another tenant's file does not exist for this one
    notes = client.post("/v1/files", data={"purpose": "user_data"}, files={"file": ("n.txt", b"x")}).json()[
        "id"
    ]
    assert_openai_error(ask(client, notes), 400, "invalid_file_purpose")
    assert engine.calls == []  # nothing bad reached the engine
