"""Per-tenant quotas: stored bytes and vector stores. Over one, a 429 naming the quota and its setting, and
nothing of the refused request is kept; other tenants are not affected; freeing room lets it through."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.helpers import ADMIN, MemoryStore, assert_openai_error, auth, offline_settings


def tenant_key(client: TestClient, tenant: str) -> dict[str, str]:
    return auth(client.post("/v1/admin/api_keys", json={"tenant": tenant}, headers=auth(ADMIN)).json()["key"])


def upload(client: TestClient, key: dict[str, str], size: int):
    return client.post(
        "/v1/files", data={"purpose": "assistants"}, files={"file": ("a.txt", b"x" * size)}, headers=key
    )


def test_stored_bytes_are_a_quota_per_tenant(tmp_path: Path) -> None:
    objects = MemoryStore()
    app = create_app(offline_settings(tmp_path, max_storage_bytes_per_tenant=100), store=objects)
    with TestClient(app) as client:
        acme, other = tenant_key(client, "acme"), tenant_key(client, "other")
        first = upload(client, acme, 60).json()["id"]
        err = assert_openai_error(upload(client, acme, 60), 429, "quota_exceeded")
        assert (
            "60 used of 100" in err["message"] and "TUNESERVE_MAX_STORAGE_BYTES_PER_TENANT" in err["message"]
        )
        assert (
            len([k for k in objects.objects if k.startswith("files/acme/")]) == 1
        )  # the refused one is gone
        assert upload(client, other, 60).status_code == 200  # another tenant has its own room
        client.delete(f"/v1/files/{first}", headers=acme)
        assert upload(client, acme, 60).status_code == 200  # room again


def test_vector_stores_are_a_quota_per_tenant(tmp_path: Path) -> None:
    app = create_app(offline_settings(tmp_path, max_vector_stores_per_tenant=2), store=MemoryStore())
    with TestClient(app) as client:
        acme = tenant_key(client, "acme")
        made = [client.post("/v1/vector_stores", json={"name": n}, headers=acme).json()["id"] for n in "ab"]
        err = assert_openai_error(
            client.post("/v1/vector_stores", json={}, headers=acme), 429, "quota_exceeded"
        )
        assert (
            "vector stores" in err["message"] and "TUNESERVE_MAX_VECTOR_STORES_PER_TENANT" in err["message"]
        )
        assert len(client.get("/v1/vector_stores", headers=acme).json()["data"]) == 2
        assert client.post("/v1/vector_stores", json={}, headers=auth(ADMIN)).status_code == 200
        client.delete(f"/v1/vector_stores/{made[0]}", headers=acme)
        assert client.post("/v1/vector_stores", json={}, headers=acme).status_code == 200


def test_file_objects_left_by_a_crash_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    objects = MemoryStore()
    app = create_app(offline_settings(tmp_path), store=objects)
    with TestClient(app, headers=auth(ADMIN)) as client:
        kept = upload(client, auth(ADMIN), 10).json()["id"]
        deleted = upload(client, auth(ADMIN), 10).json()["id"]
        client.delete(f"/v1/files/{deleted}")
    files = app.state.services.files
    live_key = files.get("default", kept).key
    objects.put_bytes("files/default/file-crashed-before-its-row", b"x")  # old: its upload died long ago
    objects.modified["files/default/file-crashed-before-its-row"] -= 7200
    objects.put_bytes("files/default/file-in-flight", b"x")  # an upload whose row is being written now
    objects.put_bytes(f"files/default/{deleted}", b"x")  # a deleted file's object the crash left behind
    assert files.sweep_orphans() == 2
    assert sorted(objects.objects) == sorted([live_key, "files/default/file-in-flight"])


def test_the_admin_overrides_one_tenants_limits(tmp_path: Path) -> None:
    from tests.helpers import FakeEngine

    models = Path(__file__).resolve().parents[4] / "data" / "models"
    settings = offline_settings(tmp_path, models_dir=models)
    app = create_app(settings, store=MemoryStore(), engine=FakeEngine({"SmolLM2-135M-Instruct"}))
    with TestClient(app) as client:
        acme, other = tenant_key(client, "acme"), tenant_key(client, "other")
        url = "/v1/admin/tenants/acme/limits"
        set_ = client.post(
            url, json={"vector_stores": 1, "requests_per_minute": 2}, headers=auth(ADMIN)
        ).json()
        assert set_["overrides"] == {"vector_stores": 1, "requests_per_minute": 2}
        assert set_["limits"]["vector_stores"] == 1 and set_["limits"]["running_jobs"] == 2  # the default
        client.post("/v1/vector_stores", json={}, headers=acme)
        assert_openai_error(client.post("/v1/vector_stores", json={}, headers=acme), 429, "quota_exceeded")
        assert client.post("/v1/vector_stores", json={}, headers=other).status_code == 200
        chat = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "hi"}]}
        codes = [client.post("/v1/chat/completions", json=chat, headers=acme).status_code for _ in range(3)]
        assert codes == [200, 200, 429]  # its own rate, not the default 1200
        reset = client.post(url, json={"vector_stores": None}, headers=auth(ADMIN)).json()
        assert reset["overrides"] == {"requests_per_minute": 2} and reset["limits"]["vector_stores"] == 100
        assert client.post("/v1/vector_stores", json={}, headers=acme).status_code == 200
        assert client.get(url, headers=auth(ADMIN)).json() == reset
        assert client.get("/v1/admin/tenants/nobody/limits", headers=auth(ADMIN)).status_code == 404
        assert client.post(url, json={"vector_stores": 9}, headers=acme).status_code == 403
        assert client.post(url, json={"vector_stores": -1}, headers=auth(ADMIN)).status_code == 400
        # The tenants, and which are disabled.
        client.post("/v1/admin/tenants/other/disable", headers=auth(ADMIN))
        tenants = {t["id"]: t for t in client.get("/v1/admin/tenants", headers=auth(ADMIN)).json()["data"]}
        assert {"acme", "other"} <= set(tenants) and tenants["other"]["disabled_at"] is not None
        assert tenants["acme"]["disabled_at"] is None
        assert client.get("/v1/admin/tenants", headers=acme).status_code == 403
