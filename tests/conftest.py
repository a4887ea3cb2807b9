"""Shared test setup: keep the developer's own TUNESERVE_* variables out of every test, and record which
API operations the tests call (tests/route_coverage.py)."""

import os

import pytest

from tests import route_coverage

MODE = os.environ.get("TUNESERVE_ROUTE_COVERAGE", "")  # "record" (first tier) or "check" (last tier)
if MODE:
    route_coverage.start_recording()


@pytest.fixture(autouse=True)
def _clean_tuneserve_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TUNESERVE_"):
            monkeypatch.delenv(name)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not MODE:
        return
    calls = route_coverage.save(previous=MODE == "check")
    missing = route_coverage.uncovered(calls) if MODE == "check" else []
    if missing:
        print("\nAPI operations that no test calls:\n  " + "\n  ".join(missing))
        session.exitstatus = 1
