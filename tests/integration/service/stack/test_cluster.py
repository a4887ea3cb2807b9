"""The stack on services it did not start, shaped as a KubeRay deployment: `TUNESERVE_RAY_ADDRESS` names a
Ray head that offers no CPUs (as the RayService's head, `num-cpus: "0"`) with two worker nodes of 2 CPUs
each, and `TUNESERVE_S3_*` an S3 server of its own (rclone's, as no MinIO server installs here) with its
own keys and bucket. Ray places the vLLM replica on a worker, where it answers, and serves an adapter
imported through the API from that bucket as transformers + peft do; when the node is lost (every process
of it killed at once), Serve starts the replica again on the other worker and the same questions get the
same answers. The nodes are processes on this machine with their own IPs (127.0.0.x)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import openai
import pytest

from service.platform.net import free_ports, listening
from service.platform.settings import DEFAULT_BASE_MODEL, Settings
from service.platform.storage import ObjectStore, S3Credentials, start_embedded_s3
from tests.integration.helpers import (
    RunningStack,
    import_adapter,
    make_adapter,
    make_stack,
    ray_node,
    stop_ray_node,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.first]

WORKERS = ("127.0.0.2", "127.0.0.3")
QUESTION = "Name a large river."
BUCKET = "cluster-models"


def test_a_replica_on_a_worker_node_answers_and_moves_when_its_node_is_lost(tmp_path: Path) -> None:
    gcs, dashboard, client_port, metrics, s3_port = free_ports(5)
    creds = S3Credentials(f"http://127.0.0.1:{s3_port}", "cluster-key", "cluster-secret", "eu-west-1")
    s3 = start_embedded_s3(
        Settings(data_dir=tmp_path / "s3", s3_bucket=BUCKET), creds, s3_port, tmp_path / "s3.log"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESERVE_", "RAY_AUTH"))}
    # A cluster without Ray's token authentication, as the stack expects of one by default. Said outright:
    # Ray turns it on by itself when ~/.ray/auth_token exists (any earlier Ray use may have left one).
    env["RAY_AUTH_MODE"] = "disabled"
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
            TUNESERVE_SERVING_DTYPE="float32",  # as the reference below
            TUNESERVE_S3_ENDPOINT_URL=creds.endpoint_url,
            TUNESERVE_S3_ACCESS_KEY_ID=creds.access_key_id,
            TUNESERVE_S3_SECRET_ACCESS_KEY=creds.secret_access_key,
            TUNESERVE_S3_REGION=creds.region,
            TUNESERVE_S3_BUCKET=BUCKET,
            TUNESERVE_STARTUP_TIMEOUT_S="600",  # its deployments wait for the workers to join and start
        )
        stack.up()  # its Serve deployments wait for the workers: the head has no CPU for them
        wait_until(lambda: "3 node(s)" in _health(stack)["ray"]["detail"], 60, "both workers to join")
        first = _engine_node(stack)
        assert first in WORKERS, first  # not the head
        client = stack.client()
        folder = make_adapter(tmp_path / "adapter", seed=3, scale=0.1)
        adapter = import_adapter(stack, folder, "cluster")
        keys = [o.key for o in ObjectStore(creds, BUCKET).list("adapters/")]
        assert any(k.endswith("adapter_model.safetensors") for k in keys), keys  # in the configured bucket
        expected = {DEFAULT_BASE_MODEL: _answer(client, DEFAULT_BASE_MODEL), adapter: _reference(folder)}
        assert _answer(client, adapter) == expected[adapter]  # loaded from that bucket on the worker
        assert all(expected.values())

        stop_ray_node(nodes.pop(first), lose=True)
        wait_until(
            lambda: all(_answer(client, m, timeout=30) == a for m, a in expected.items()),
            300,
            "the same answers after the node loss",
        )
        [other] = [ip for ip in WORKERS if ip != first]
        assert _engine_node(stack) == other
        assert "2 node(s)" in _health(stack)["ray"]["detail"]
    finally:
        if stack is not None:
            stack.down()
        for node in [*nodes.values(), head]:
            stop_ray_node(node)
        s3.terminate()
        s3.wait(30)


def _health(stack: RunningStack) -> dict:
    return stack.get("/health").json()["components"]


def _engine_node(stack: RunningStack) -> str:
    engines = _health(stack)["engines"]["detail"]
    return re.search(r"on (\S+)$", engines)[1]


def _answer(client: openai.OpenAI, model: str, timeout: float = 120) -> str | None:
    """The model's greedy answer to the question; None while the engine cannot answer."""
    try:
        chat = client.with_options(timeout=timeout).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
            temperature=0,
        )
    except openai.APIError:
        return None
    return chat.choices[0].message.content


def _reference(folder: Path) -> str:
    """transformers + peft's greedy answer with the adapter (float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.integration.helpers import BASE_PATH, greedy

    base = AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=torch.float32)
    return greedy(
        PeftModel.from_pretrained(base, folder), AutoTokenizer.from_pretrained(BASE_PATH), QUESTION, 8
    )
