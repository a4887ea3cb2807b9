"""Shared test setup: keep the developer's own TUNESERVE_* variables out of every test."""

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_tuneserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TUNESERVE_"):
            monkeypatch.delenv(name)
