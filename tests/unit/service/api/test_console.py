"""The web console at `/`: served without a key (it asks for one), only its own files, outside the OpenAPI
document, strict about what the browser may run, and every API path its script calls is one the API has.
Its behaviour in a real browser: tests/integration/service/api/test_console.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from tests.helpers import MemoryStore, offline_settings

CONSOLE = Path(__file__).resolve().parents[4] / "service" / "api" / "console"
SCRIPT = (CONSOLE / "app.js").read_text()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    app = create_app(offline_settings(tmp_path_factory.mktemp("console")), store=MemoryStore())
    with TestClient(app) as client:
        yield client


def test_the_console_is_served_at_the_root_without_a_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    script = client.get("/console/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert client.get("/console/app.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["index.html", "../routes/console.py", "%2e%2e%2fapp.py", "nope.js"])
def test_only_its_own_assets(client: TestClient, name: str) -> None:
    assert client.get(f"/console/{name}").status_code == 404


def test_the_console_is_not_part_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/console") for p in paths)


def test_the_script_never_parses_api_text_as_markup_or_code() -> None:
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert unsafe not in SCRIPT, unsafe
    assert "localStorage" not in SCRIPT  # the key lives in this tab's sessionStorage only


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_every_path_the_script_calls_exists(client: TestClient) -> None:
    api = {_normalise(p): set(ops) for p, ops in client.get("/openapi.json").json()["paths"].items()}
    called = set()
    for literal in re.findall(r"[`\"](/(?:v1|health)[^`\"?]*)", SCRIPT):
        path = re.sub(r"\$\{[^}]*\}", "{}", literal)
        called.add(path)
    assert len(called) > 20
    for path in called:
        assert path in api or _normalise(path) in api, f"the console calls {path}, which the API lacks"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_script_parses() -> None:
    subprocess.run(["node", "--check", str(CONSOLE / "app.js")], check=True)
