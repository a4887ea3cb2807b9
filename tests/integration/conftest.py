"""Integration tier: the real stack (rclone S3 server, Ray head, Ray Serve) started through the CLI on
free ports with a temporary data dir, once per test session, and stopped at the end.

The feature tests of fine-tuning jobs, evals and vector stores that need no served model take
`feature_stack` / `feature_client` instead: they run twice, on the shared stack (SQLite, the embedded
default) and on a stack whose database is a PostgreSQL server started from the machine's binaries."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from service.platform.settings import DEFAULT_BASE_MODEL, VISION_TEST_MODEL
from tests.integration.helpers import (
    MODELS_DIR,
    SHARED_ADAPTERS,
    RunningStack,
    make_stack,
    postgres_server,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """TEST_CPU_LOG=<file> (not a TUNESERVE_ name: the CLI refuses unknown settings) writes a line per test:
    its wall time and the CPU time the whole machine spent meanwhile. The tier is CPU-bound on CI's 2
    cores; a test whose machine stays busy while it waits shows work left running by an earlier one."""
    path = os.environ.get("TEST_CPU_LOG")
    if not path:
        yield
        return
    started, cpu = time.monotonic(), _machine_cpu_seconds()
    yield
    wall, spent = time.monotonic() - started, _machine_cpu_seconds() - cpu
    with open(path, "a") as log:
        log.write(f"{wall:7.1f} s {spent:7.1f} cpu-s  {item.nodeid}\n")


def _machine_cpu_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
    # Tests marked `first` start clusters of their own and run before any shared stack is up: on CI's two
    # cores the cluster test's start took over 5 minutes behind the session's stacks, about 2.5 alone.
    items.sort(key=lambda item: item.get_closest_marker("first") is None)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def client(stack: RunningStack) -> openai.OpenAI:
    """The official client of the shared stack, with the admin key."""
    return stack.client()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The shared stack of the test session, serving SmolLM2 with vLLM.

    It serves in float32: in bfloat16, a batch's shape changes the rounding of the matmuls enough to flip
    near-tied greedy tokens (seen even with the base model alone), which would make "the same answer in a
    batch as alone" depend on luck. Throughput is measured in bfloat16 (bench/bench_serving.py).

    TUNESERVE_TEST_STACK=<data dir> runs the tests against a stack a developer started (with
    TUNESERVE_SERVING_DTYPE=float32, TUNESERVE_RAY_NUM_CPUS=6, both base models and
    TUNESERVE_ADAPTER_IMPORT_SOURCES=s3://shared-adapters/) instead of starting one."""
    reuse = os.environ.get("TUNESERVE_TEST_STACK")
    if reuse:  # a developer's stack that is already up (same settings as below): no start, no stop
        data_dir = Path(reuse)
        port = int(json.loads((data_dir / "run" / "stack.json").read_text())["base_url"].rsplit(":", 1)[1])
        env = {**make_stack(data_dir).env, "TUNESERVE_PORT": str(port)}
        env.pop("TUNESERVE_SERVED_MODELS")
        yield RunningStack(data_dir, port, env)
        return
    # Two base models, both served: SmolLM2 and the test VLM. Each vLLM deployment holds 2 of Ray's logical
    # CPUs (its replica and its engine), so 6 leave a training job its 2.
    bases = {m: str(MODELS_DIR / m) for m in (DEFAULT_BASE_MODEL, VISION_TEST_MODEL)}
    running = make_stack(
        tmp_path_factory.mktemp("stack"),
        serve=True,
        TUNESERVE_SERVING_DTYPE="float32",
        TUNESERVE_BASE_MODELS=json.dumps(bases),
        TUNESERVE_RAY_NUM_CPUS="6",
        TUNESERVE_ADAPTER_IMPORT_SOURCES=f"s3://{SHARED_ADAPTERS}/",
        TUNESERVE_REQUEST_BODY_TIMEOUT_S="10",  # test_stack waits out a stalled upload's
    )
    running.up()
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server of the test session (skips where the machine has none)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def pg_stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A stack whose database is PostgreSQL, its Ray head of 2 CPUs (a test adds a second node when it
    needs one: `second_node`). It serves no model, and has settings some tests need: one running job per
    tenant, and a job is run once however the cluster interrupts it."""
    running = make_stack(
        tmp_path_factory.mktemp("pg-stack"),
        TUNESERVE_DATABASE_URL=postgres_url,
        TUNESERVE_RAY_NUM_CPUS="2",
        TUNESERVE_MAX_RUNNING_JOBS_PER_TENANT="1",
        TUNESERVE_TRAINING_MAX_ATTEMPTS="1",
    )
    running.up()
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def feature_stack(request: pytest.FixtureRequest) -> RunningStack:
    """The shared stack, then the PostgreSQL one: a test taking this runs on both databases."""
    return request.getfixturevalue("stack" if request.param == "sqlite" else "pg_stack")


@pytest.fixture(scope="module")
def feature_client(feature_stack: RunningStack) -> openai.OpenAI:
    return feature_stack.client()
