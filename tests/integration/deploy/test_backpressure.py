"""An engine at capacity: past the requests Ray Serve lets wait for a full replica, a chat gets OpenAI's
503 with `Retry-After` (which the official clients retry), and the ones admitted are answered. On a real
Ray Serve of its own, in a process of its own (the session's stack has its own Ray)."""

from __future__ import annotations

import os

from tests.integration.deploy.backpressure_probe import RESULT
from tests.integration.helpers import script_result


def test_a_full_queue_gets_a_503_to_retry_and_the_admitted_chats_are_answered() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # a Ray of its own
    results = script_result("tests.integration.deploy.backpressure_probe", prefix=RESULT, env=env)
    assert [r["status"] for r in results] == [200, 200, 503], results  # running, waiting, turned away
    refused = results[2]
    assert refused["code"] == "engine_overloaded" and refused["headers"] == {"Retry-After": "1"}
    assert "'slow' is at capacity (1 requests waiting" in refused["message"]
    assert all("data: [DONE]" in r["body"] for r in results if r["status"] == 200)
