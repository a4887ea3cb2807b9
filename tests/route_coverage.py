"""Which operations of the API the tests call: every HTTP request the test process sends through httpx (the
official `openai` client, httpx itself and FastAPI's TestClient all do) is recorded by method and path.

`make test` records the unit tier (TUNESERVE_ROUTE_COVERAGE=record), then checks after the integration
tier (=check) that every operation in the OpenAPI document was called by some test: a new route without a
test fails CI, naming it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

RECORD = Path(__file__).resolve().parents[1] / ".pytest_cache" / "tuneserve-routes-called.json"
called: set[tuple[str, str]] = set()


def start_recording() -> None:
    """Wrap httpx's send (sync and async) to note each request's method and path (Starlette's TestClient is
    built on its successor, httpx2: both are wrapped)."""
    import httpx2

    for cls in (httpx.Client, httpx.AsyncClient, httpx2.Client, httpx2.AsyncClient):
        send = cls.send

        def recording(self, request, *args, _send=send, **kwargs):  # an httpx or httpx2 Request
            called.add((request.method, request.url.path))
            return _send(self, request, *args, **kwargs)

        cls.send = recording


def operations() -> list[tuple[str, str]]:
    """(method, path template) of every operation in the API's OpenAPI document."""
    import tempfile

    from service.api.app import create_app
    from service.platform.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), api_key="x", s3_endpoint_url="http://127.0.0.1:1")
        spec = create_app(settings).openapi()
    return sorted((m.upper(), p) for p, ops in spec["paths"].items() for m in ops)


def uncovered(calls: set[tuple[str, str]]) -> list[str]:
    """The operations no call reached, as `METHOD /path/{param}`. A call reaches the operation whose path
    matches it with the fewest parameters (`/v1/evals/suites` is not `/v1/evals/{eval_id}`)."""
    ops = sorted(operations(), key=lambda op: op[1].count("{"))
    patterns = [(m, t, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$")) for m, t in ops]
    reached = set()
    for method, path in calls:
        hit = next(((m, t) for m, t, pattern in patterns if m == method and pattern.match(path)), None)
        reached.add(hit)
    return [f"{m} {t}" for m, t in sorted(ops, key=lambda op: op[1]) if (m, t) not in reached]


def save(previous: bool) -> set[tuple[str, str]]:
    """Add this session's calls to the record (to those of the earlier tier when `previous`); returns all."""
    calls = set(called)
    if previous and RECORD.exists():
        calls |= {tuple(c) for c in json.loads(RECORD.read_text())}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(sorted(calls)))
    return calls
