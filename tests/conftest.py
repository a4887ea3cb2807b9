"""Shared test setup: keep the developer's own TUNESERVE_* variables out of every test, record which API
operations the tests call (tests/route_coverage.py), and end the process with pytest's status."""

import os
import sys

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


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not MODE:
        return
    if _is_xdist_worker(session.config):  # its calls go to the controller, which saves them all
        session.config.workeroutput["routes_called"] = sorted(route_coverage.called)
        return
    calls = route_coverage.save(previous=MODE == "check")
    missing = route_coverage.uncovered(calls) if MODE == "check" else []
    if missing:
        print("\nAPI operations that no test calls:\n  " + "\n  ".join(missing))
        session.exitstatus = 1


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist (the unit tier runs on every core): a worker's recorded calls join the controller's."""
    route_coverage.called.update(tuple(call) for call in node.workeroutput.get("routes_called", []))


_SESSION = pytest.StashKey[pytest.Session]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process once pytest has reported, with pytest's exit status, before the interpreter's own
    teardown. The tests leave native libraries in this process (Ray's core worker and its gRPC threads,
    torch, faiss), and once in a while one of them crashed while Python finalised its modules: every
    integration test passed, the summary was printed, then a segmentation fault made `make test` fail
    (2026-12-06). Nothing after this point is the tests' business: stacks and servers are stopped and route
    coverage is saved at the session's finish. A run stopped by Ctrl-C ends as usual, so that pytest reports
    where it stopped. To find the crashing library, run without this hook and with PYTHONFAULTHANDLER=1."""
    session = config.stash.get(_SESSION, None)
    if session is None or session.exitstatus == pytest.ExitCode.INTERRUPTED or _is_xdist_worker(config):
        return  # an xdist worker still has its last reports to send: xdist ends it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus))
