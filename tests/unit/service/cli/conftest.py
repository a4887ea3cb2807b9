"""The CLI's tests run `tuneserve ...` (its main()) over real HTTP against the API served by uvicorn in
this process: the real base model's weights, an in-memory object store, ingestion in threads and an engine
that echoes (tests.helpers.EchoEngine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from service.api.app import create_app
from service.cli.main import main
from service.platform.net import free_port
from service.platform.settings import DEFAULT_BASE_MODEL
from service.platform.tasks import ThreadRunner
from tests.helpers import ADMIN, EchoEngine, MemoryStore, offline_settings
from tests.unit.service.models.test_imports import MODELS


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    settings = offline_settings(tmp_path_factory.mktemp("cli"), models_dir=MODELS)
    app = create_app(
        settings, engine=EchoEngine({DEFAULT_BASE_MODEL}), tasks=ThreadRunner(), store=MemoryStore()
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def cli(port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Runs `tuneserve ARGS...` against the server: (exit code, stdout, stderr)."""
    for name, value in {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "API_KEY": ADMIN,
        "DATA_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(f"TUNESERVE_{name}", value)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
