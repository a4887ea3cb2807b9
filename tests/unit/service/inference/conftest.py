"""The API over an engine that answers chats by echoing (tests.helpers.EchoEngine), for the tests of what
the service keeps of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.helpers import ADMIN, EchoEngine, MemoryStore, auth, offline_settings


@pytest.fixture
def stack(tmp_path: Path):
    """(a client with the admin key, the engine)."""
    engine = EchoEngine({DEFAULT_BASE_MODEL})
    app = create_app(offline_settings(tmp_path), store=MemoryStore(), engine=engine)
    with TestClient(app, headers=auth(ADMIN)) as client:
        yield client, engine
