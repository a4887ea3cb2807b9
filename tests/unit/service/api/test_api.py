"""The API skeleton through FastAPI's test client: auth, admin keys, error shapes. No servers."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL, Settings
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(offline_settings(tmp_path)))


def test_models_lists_the_base_model_and_the_embedder(client: TestClient) -> None:
    resp = client.get("/v1/models", headers=auth(ADMIN))
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "list"
    assert [(m["id"], m["type"]) for m in body["data"]] == [
        (DEFAULT_BASE_MODEL, "llm"),
        ("all-MiniLM-L6-v2", "embeddings"),
    ]
    assert body["data"][0]["object"] == "model"
    assert (
        client.get(f"/v1/models/{DEFAULT_BASE_MODEL}", headers=auth(ADMIN)).json()["id"] == DEFAULT_BASE_MODEL
    )
    assert client.get("/v1/models/all-MiniLM-L6-v2", headers=auth(ADMIN)).json()["type"] == "embeddings"
    assert_openai_error(client.get("/v1/models/nope", headers=auth(ADMIN)), 404, "model_not_found")
    # Listed, so asked for by mistake: a 400 saying what it answers, not a 404.
    chat = {"model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "hi"}]}
    refused = client.post("/v1/chat/completions", json=chat, headers=auth(ADMIN))
    assert assert_openai_error(refused, 400, "model_not_supported")["param"] == "model"
    assert "/v1/embeddings" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    "headers, code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "Basic abc"}, "invalid_api_key"),
        ({"Authorization": "Bearer "}, "invalid_api_key"),
    ],
)
def test_every_v1_route_needs_a_valid_key(client: TestClient, headers: dict, code: str) -> None:
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/admin/api_keys"),
        ("POST", "/v1/admin/api_keys"),
    ]:
        err = assert_openai_error(client.request(method, path, headers=headers), 401, code)
        assert err["type"] == "authentication_error"


def test_every_v1_route_is_protected() -> None:
    """Any route added under /v1 must depend on authentication (guards against a forgotten dependency)."""
    app = create_app(
        Settings(
            data_dir=Path("/tmp/unused-ts"),
            api_key=ADMIN,
            s3_endpoint_url="http://x",
            s3_access_key_id="a",
            s3_secret_access_key="b",
            database_url="sqlite://",
        )
    )
    for route in app.routes:
        if getattr(route, "path", "").startswith("/v1"):
            names = {d.call.__name__ for d in route.dependant.dependencies}
            names |= {dd.call.__name__ for d in route.dependant.dependencies for dd in d.dependencies}
            assert "get_principal" in names, route.path


def test_admin_creates_tenant_keys_that_work_and_can_be_revoked(client: TestClient) -> None:
    resp = client.post("/v1/admin/api_keys", json={"tenant": "acme", "name": "ci"}, headers=auth(ADMIN))
    assert resp.status_code == 200, resp.text
    created = resp.json()
    key = created["key"]
    assert created["tenant"] == "acme" and key.startswith(created["prefix"])

    assert client.get("/v1/models", headers=auth(key)).status_code == 200
    listed = client.get("/v1/admin/api_keys", headers=auth(ADMIN)).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]  # secrets are shown once

    # A tenant key cannot administer.
    assert_openai_error(
        client.post("/v1/admin/api_keys", json={"tenant": "evil"}, headers=auth(key)), 403, "admin_required"
    )

    revoked = client.delete(f"/v1/admin/api_keys/{created['id']}", headers=auth(ADMIN)).json()
    assert revoked["revoked_at"] is not None
    assert_openai_error(client.get("/v1/models", headers=auth(key)), 401, "invalid_api_key")
    assert_openai_error(client.delete("/v1/admin/api_keys/key-nope", headers=auth(ADMIN)), 404)


def test_keys_are_stored_hashed(client: TestClient) -> None:
    key = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
    rows = client.app.state.services.keys.list()
    assert rows and all(key not in (r.key_hash, r.prefix) for r in rows)


def test_schema_errors_are_400_naming_the_field(client: TestClient) -> None:
    err = assert_openai_error(
        client.post("/v1/admin/api_keys", json={"tenant": "Bad Name!"}, headers=auth(ADMIN)), 400
    )
    assert err["param"] == "tenant" and "tenant" in err["message"]
    body = {"model": "m", "training_file": "f", "hyperparameters": {"n_epochs": 0}}  # an int or "auto"
    err = assert_openai_error(client.post("/v1/fine_tuning/jobs", json=body, headers=auth(ADMIN)), 400)
    assert err["param"] == "hyperparameters.n_epochs"  # not the union member pydantic tried
    err = assert_openai_error(
        client.post(
            "/v1/admin/api_keys",
            content=b"{not json",
            headers={**auth(ADMIN), "content-type": "application/json"},
        ),
        400,
        "invalid_json",
    )
    assert err["message"].startswith("The request body is not valid JSON: Expecting property name")
    err = assert_openai_error(client.post("/v1/admin/api_keys", content=b"{}", headers=auth(ADMIN)), 400)
    assert "'Content-Type: application/json'" in err["message"]  # not "a valid dictionary"
    json_body = {**auth(ADMIN), "content-type": "application/json"}
    err = assert_openai_error(client.post("/v1/admin/api_keys", content=b"[1]", headers=json_body), 400)
    assert err["message"] == "The request body must be a JSON object."


def test_unknown_route_and_method(client: TestClient) -> None:
    err = assert_openai_error(client.get("/v1/nothing-here", headers=auth(ADMIN)), 404, "not_found")
    assert "/v1/nothing-here" in err["message"]
    assert_openai_error(client.put("/v1/models", headers=auth(ADMIN)), 405)


def test_health_says_up_or_down_to_anyone_and_each_component_to_the_admin(client: TestClient) -> None:
    tenant = client.post("/v1/admin/api_keys", json={"tenant": "acme"}, headers=auth(ADMIN)).json()["key"]
    for headers in ({}, auth(tenant), auth("ts-wrong")):
        resp = client.get("/health", headers=headers)
        assert resp.status_code == 503 and resp.json() == {"status": "degraded"}  # the store is down here
    resp = client.get("/health", headers=auth(ADMIN))
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "degraded"
    assert body["components"]["db"]["status"] == "ok"
    assert body["components"]["object_store"]["status"] == "error"
    assert "unreachable" in body["components"]["object_store"]["detail"]


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/health",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/admin/api_keys",
        "/v1/admin/api_keys/{key_id}",
        "/v1/evals",
        "/v1/evals/suites",
        "/v1/evals/{eval_id}/runs/{run_id}/output_items",
        "/v1/evals/{eval_id}/compare",
    } <= set(spec["paths"])
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert op.get("summary"), f"{path} has no summary"


@pytest.mark.parametrize("size", [200_000, 20_000])  # refused by its Content-Length / once read
def test_oversized_upload_is_413_and_nothing_is_stored(tmp_path: Path, size: int) -> None:
    store = MemoryStore()
    client = TestClient(create_app(offline_settings(tmp_path, max_file_bytes=1000), store=store))
    line = b'{"prompt": "p", "completion": "c"}\n'
    resp = client.post(
        "/v1/files",
        headers=auth(ADMIN),
        data={"purpose": "fine-tune"},
        files={"file": ("big.jsonl", line * (size // len(line)))},
    )
    err = assert_openai_error(resp, 413, "file_too_large")
    assert "TUNESERVE_MAX_FILE_BYTES" in err["message"]
    assert store.objects == {}
    assert client.get("/v1/files", headers=auth(ADMIN)).json()["data"] == []


def test_upload_with_unknown_purpose_is_400(client: TestClient) -> None:
    resp = client.post(
        "/v1/files", headers=auth(ADMIN), data={"purpose": "magic"}, files={"file": ("a.txt", b"x")}
    )
    assert assert_openai_error(resp, 400)["param"] == "purpose"


def test_vision_uploads_must_be_images_that_decode(tmp_path: Path) -> None:
    import io

    from PIL import Image

    store = MemoryStore()
    client = TestClient(create_app(offline_settings(tmp_path), store=store))
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(out, format="PNG")

    def upload(data: bytes):
        return client.post(
            "/v1/files", headers=auth(ADMIN), data={"purpose": "vision"}, files={"file": ("i.png", data)}
        )

    assert upload(out.getvalue()).json()["purpose"] == "vision"
    err = assert_openai_error(upload(out.getvalue()[:30]), 400, "invalid_image")
    assert "does not decode" in err["message"] and err["param"] == "file"
    assert len(store.objects) == 1  # the refused upload stored nothing


def test_health_awaits_async_probes_and_reports_their_failures(tmp_path, monkeypatch) -> None:
    import asyncio

    from service.api.routes import health

    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.2)

    async def engines() -> str:
        await asyncio.sleep(0)
        return "2 running"

    async def broken() -> str:
        raise RuntimeError("replica gone")

    async def stuck() -> str:
        await asyncio.sleep(30)
        return "never"

    probes = {"engines": engines, "broken": broken, "stuck": stuck, "sync": lambda: "fine"}
    client = TestClient(create_app(offline_settings(tmp_path), probes=probes))
    components = client.get("/health", headers=auth(ADMIN)).json()["components"]
    assert components["engines"] == {"status": "ok", "detail": "2 running"}
    assert components["sync"] == {"status": "ok", "detail": "fine"}
    assert components["broken"] == {"status": "error", "detail": "RuntimeError: replica gone"}
    assert components["stuck"] == {"status": "error", "detail": "no answer in 0.2 s"}
