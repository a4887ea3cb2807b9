"""An engine at capacity: past the requests Ray Serve lets wait for a full replica, a chat gets OpenAI's
503 with `Retry-After` (which the official clients retry), and the ones admitted are answered. On a real
Ray Serve of its own, in a process of its own (the session's stack has its own Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.deploy.backpressure_probe import RESULT

REPO = Path(__file__).resolve().parents[3]


def test_a_full_queue_gets_a_503_to_retry_and_the_admitted_chats_are_answered() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.deploy.backpressure_probe"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith(RESULT))
    results = json.loads(line.removeprefix(RESULT))
    assert [r["status"] for r in results] == [200, 200, 503], results  # running, waiting, turned away
    refused = results[2]
    assert refused["code"] == "engine_overloaded" and refused["headers"] == {"Retry-After": "1"}
    assert "'slow' is at capacity (1 requests waiting" in refused["message"]
    assert all("data: [DONE]" in r["body"] for r in results if r["status"] == 200)
