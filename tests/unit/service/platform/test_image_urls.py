"""Images by http(s) URL, only from the domains the operator lists (TUNESERVE_IMAGE_URL_DOMAINS): which
hosts are allowed, every redirect checked, the size limit, and the same rule in chats and in training data
(fetched once when the job is made, kept as a `vision` file of the tenant). A real HTTP server on
127.0.0.1 plays the image host; `localhost` (the same machine, another name) plays a host not listed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench import vision_task
from service.api.app import create_app
from service.platform.db import FileRow, JobRow
from service.platform.image_fetch import fetch_image
from service.platform.images import (
    MAX_IMAGE_BYTES,
    ImageError,
    classify,
    decode_data_url,
    encode_data_url,
    host_allowed,
)
from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL
from tests.helpers import ADMIN, FakeEngine, MemoryStore, assert_openai_error, auth, offline_settings

MODELS = Path(__file__).resolve().parents[4] / "data" / "models"
[(PNG, COLOUR)] = vision_task.pictures(1, seed=4)


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("example.com", True),
        ("img.example.com", True),
        ("IMG.Example.COM.", True),
        ("badexample.com", False),
        ("example.com.evil.net", False),
        ("169.254.169.254", False),
    ],
)
def test_a_host_is_allowed_when_it_is_a_listed_domain_or_under_one(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["example.com", ".cdn.example.org"]) is allowed


def test_a_data_url_decodes_to_the_bytes_it_was_made_of() -> None:
    data = bytes(range(256)) * 3
    url = encode_data_url(data, "image/webp")
    assert url.startswith("data:image/webp;base64,") and decode_data_url(url) == data


def test_urls_off_the_list_are_refused_with_what_to_do_instead() -> None:
    assert classify("https://img.example.com/a.png", ["example.com"]) == "web"
    for url in ("https://example.com/a.png", "http://user@example.com/a.png", "https:///a.png"):
        with pytest.raises(ImageError, match="data URL"):
            classify(url, [] if "user" not in url else ["example.com"])
    with pytest.raises(ImageError, match="TUNESERVE_IMAGE_URL_DOMAINS"):
        classify("http://169.254.169.254/latest/meta-data")


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        port = self.server.server_address[1]
        routes = {
            "/a.png": (200, {}, PNG),
            "/moved": (302, {"Location": "/a.png"}, b""),
            "/away": (302, {"Location": f"http://localhost:{port}/a.png"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/huge": (200, {}, b"\0" * (MAX_IMAGE_BYTES + 1)),
        }
        status, headers, body = routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


ALLOWED = ["127.0.0.1"]


def test_fetching_follows_redirects_on_allowed_hosts_only(host: str) -> None:
    assert fetch_image(f"{host}/a.png", ALLOWED) == PNG
    assert fetch_image(f"{host}/moved", ALLOWED) == PNG
    for path, why in [
        ("/away", "not fetched from localhost"),  # an allowed host cannot bounce us elsewhere
        ("/loop", "more than 3 redirects"),
        ("/huge", "larger than 10 MB"),
        ("/gone", "answered HTTP 404"),
    ]:
        with pytest.raises(ImageError, match=why):
            fetch_image(host + path, ALLOWED)
    with pytest.raises(ImageError, match="could not fetch"):
        fetch_image("http://127.0.0.1:9/a.png", ALLOWED)  # nothing listens on the discard port


def _app(tmp_path: Path, engine: FakeEngine | None = None, **settings: object) -> TestClient:
    tmp_path.mkdir(exist_ok=True)
    bases = {m: MODELS / m for m in (DEFAULT_BASE_MODEL, VISION_TEST_MODEL)}
    app = create_app(
        offline_settings(tmp_path, models_dir=MODELS, base_models=bases, **settings),
        engine=engine,
        store=MemoryStore(),
    )
    return TestClient(app, headers=auth(ADMIN))


def _ask(client: TestClient, url: str):
    message = vision_task.user_message(url)
    return client.post("/v1/chat/completions", json={"model": VISION_TEST_MODEL, "messages": [message]})


def test_chat_images_by_url_reach_the_engine_as_data_urls_from_allowed_hosts_only(
    tmp_path: Path, host: str
) -> None:
    engine = FakeEngine({DEFAULT_BASE_MODEL, VISION_TEST_MODEL})
    client = _app(tmp_path, engine, image_url_domains=ALLOWED)
    assert _ask(client, f"{host}/moved").status_code == 200
    [part, _] = engine.calls[-1][2]["messages"][0]["content"]
    assert part["image_url"]["url"] == vision_task.data_url(PNG)  # the engine never fetches
    port = host.rsplit(":", 1)[1]
    for url, why in [
        (f"http://localhost:{port}/a.png", "not fetched from localhost"),
        (f"{host}/away", "not fetched from localhost"),
        (f"{host}/gone", "answered HTTP 404"),
    ]:
        err = assert_openai_error(_ask(client, url), 400, "invalid_image")
        assert why in err["message"] and err["param"] == "messages[0].content[0].image_url"
    calls = len(engine.calls)
    off = _app(tmp_path / "off", engine)  # the default: no domain is listed
    assert_openai_error(_ask(off, f"{host}/a.png"), 400, "invalid_image")
    assert len(engine.calls) == calls


def _training_file(client: TestClient, *urls: str):
    lines = [
        {"messages": [vision_task.user_message(u), {"role": "assistant", "content": COLOUR}]} for u in urls
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("v.jsonl", data)})


def test_training_images_by_url_are_fetched_once_into_files_of_the_tenant(tmp_path: Path, host: str) -> None:
    with _app(tmp_path, image_url_domains=ALLOWED) as client:
        port = host.rsplit(":", 1)[1]
        refused = _training_file(client, f"{host}/a.png", f"http://localhost:{port}/a.png")
        err = assert_openai_error(refused, 400, "invalid_file")
        assert "line 2" in err["message"] and "not fetched from localhost" in err["message"]

        broken = _training_file(client, f"{host}/a.png", f"{host}/gone").json()["id"]
        job = client.post("/v1/fine_tuning/jobs", json={"model": VISION_TEST_MODEL, "training_file": broken})
        err = assert_openai_error(job, 400, "invalid_training_file")
        assert "line 2: image" in err["message"] and "answered HTTP 404" in err["message"], err

        url = f"{host}/a.png"
        train = _training_file(client, url, url, f"{host}/moved").json()["id"]
        job = client.post("/v1/fine_tuning/jobs", json={"model": VISION_TEST_MODEL, "training_file": train})
        assert job.status_code == 200, job.json()
        services = client.app.state.services
        with services.db.session() as s:
            spec = s.get(JobRow, job.json()["id"]).spec
            kept = {row.key: row for row in s.query(FileRow).filter_by(purpose="vision")}
        assert set(spec["image_files"]) == {url, f"{host}/moved"} and spec["image_url_domains"] == ALLOWED
        assert set(spec["image_files"].values()) == set(kept)  # one file a URL, the run reads those
        assert {row.filename for row in kept.values()} == {"a.png", "moved"}
        assert all(services.store.get_bytes(key) == PNG for key in kept)

        # A job that is not created after all (its insert fails) leaves none of the files it made.
        jobs = services.jobs.store

        def failing_insert(*args, **kwargs) -> None:
            raise RuntimeError("the database went away")

        original, jobs.create = jobs.create, failing_insert
        try:
            again = _training_file(client, f"{host}/a.png").json()["id"]
            with pytest.raises(RuntimeError, match="went away"):  # the test client re-raises it
                client.post("/v1/fine_tuning/jobs", json={"model": VISION_TEST_MODEL, "training_file": again})
        finally:
            jobs.create = original
        with services.db.session() as s:
            live = s.query(FileRow).filter_by(purpose="vision", deleted_at=None).count()
        assert live == len(kept)

    with _app(tmp_path / "off") as client:  # the default: no domain is listed
        err = assert_openai_error(_training_file(client, f"{host}/a.png"), 400, "invalid_file")
        assert "line 1" in err["message"] and "TUNESERVE_IMAGE_URL_DOMAINS" in err["message"]
