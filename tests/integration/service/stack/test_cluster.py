"""The stack on a Ray cluster it did not start, shaped as KubeRay makes one: `TUNESERVE_RAY_ADDRESS` names a
head that offers no CPUs (as the RayService's head, `num-cpus: "0"`) and two worker nodes of 2 CPUs each.
Ray places the vLLM replica on a worker, where it answers; when that node is lost (every process of it
killed at once), Serve starts the replica again on the other worker and the same question gets the same
answer. The nodes are processes on this machine with their own IPs (127.0.0.x)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import openai
import pytest

from service.platform.net import free_ports, listening
from service.platform.settings import DEFAULT_BASE_MODEL
from tests.integration.helpers import RunningStack, make_stack, ray_node, stop_ray_node, wait_until

pytestmark = pytest.mark.integration

WORKERS = ("127.0.0.2", "127.0.0.3")


def test_a_replica_on_a_worker_node_answers_and_moves_when_its_node_is_lost(tmp_path: Path) -> None:
    gcs, dashboard, client_port, metrics = free_ports(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESERVE_", "RAY_AUTH"))}
    # A lost node is declared dead after 3 missed health checks a second apart (Ray's default: 5, 3 s).
    head_env = {**env, "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    head = ray_node(
        "127.0.0.1",
        0,
        head_env,
        "--head",
        f"--port={gcs}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_port}",
        f"--metrics-export-port={metrics}",
    )
    nodes = {}
    stack = None
    try:
        wait_until(lambda: listening("127.0.0.1", gcs), 90, "the Ray head")
        nodes = {ip: ray_node(ip, 2, env, f"--address=127.0.0.1:{gcs}") for ip in WORKERS}
        stack = make_stack(
            tmp_path / "stack",
            serve=True,
            TUNESERVE_RAY_ADDRESS=f"127.0.0.1:{gcs}",
            TUNESERVE_RAY_DASHBOARD_URL=f"http://127.0.0.1:{dashboard}",
            TUNESERVE_SERVED_MODELS=DEFAULT_BASE_MODEL,
        )
        stack.up()  # its Serve deployments wait for the workers: the head has no CPU for them
        assert "3 node(s)" in _health(stack)["ray"]["detail"]
        first = _engine_node(stack)
        assert first in WORKERS, first  # not the head
        client = stack.client()
        before = _answer(client)
        assert before

        stop_ray_node(nodes.pop(first), lose=True)
        wait_until(lambda: _answer(client, timeout=30) == before, 300, "the same answer after the node loss")
        [other] = [ip for ip in WORKERS if ip != first]
        assert _engine_node(stack) == other
        assert "2 node(s)" in _health(stack)["ray"]["detail"]
    finally:
        if stack is not None:
            stack.down()
        for node in [*nodes.values(), head]:
            stop_ray_node(node)


def _health(stack: RunningStack) -> dict:
    return stack.get("/health").json()["components"]


def _engine_node(stack: RunningStack) -> str:
    engines = _health(stack)["engines"]["detail"]
    return re.search(r"on (\S+)$", engines)[1]


def _answer(client: openai.OpenAI, timeout: float = 120) -> str | None:
    """SmolLM2's greedy answer to one question; None while the engine cannot answer."""
    try:
        chat = client.with_options(timeout=timeout).chat.completions.create(
            model=DEFAULT_BASE_MODEL,
            messages=[{"role": "user", "content": "Name a large river."}],
            max_tokens=12,
            temperature=0,
        )
    except openai.APIError:
        return None
    return chat.choices[0].message.content
