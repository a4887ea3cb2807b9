"""Integration tier: the real stack (rclone S3 server, Ray head, Ray Serve) started through the CLI on
free ports with a temporary data dir, once per test session, and stopped at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.platform.net import free_port

REPO = Path(__file__).resolve().parents[2]
# Base models are built once by `make setup` and shared by every test data dir.
MODELS_DIR = Path(os.environ.get("TUNESERVE_TEST_MODELS_DIR", REPO / "data" / "models"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@dataclass
class RunningStack:
    data_dir: Path
    port: int
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "api_key").read_text().strip()

    @property
    def state(self) -> dict:
        return json.loads((self.data_dir / "run" / "stack.json").read_text())

    def cli(
        self, *args: str, timeout: float = 300, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tuneserve {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                f"{proc.stderr}\n--- stack log ---\n{self.log_tail()}"
            )
        return proc

    def up(self) -> None:
        self.cli("up", "--detach")

    def down(self) -> None:
        self.cli("down", timeout=120, check=False)

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.get(self.base_url + path, headers=headers, timeout=30)

    def log_tail(self, n: int = 40) -> str:
        log = self.data_dir / "run" / "stack.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else "(no log)"


def process_cmdlines() -> dict[int, str]:
    """Command lines of the live processes on this machine (zombies excluded)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "stat").read_text().split()[2] == "Z":
                continue
            out[int(proc.name)] = (
                (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except (OSError, IndexError):
            continue
    return out


def make_stack(data_dir: Path, serve: bool = False, **extra_env: str) -> RunningStack:
    """A stack's settings; without `serve` it deploys no vLLM engine (starts in ~15 s instead of ~90 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNESERVE_")}
    port = free_port()
    env.update(
        {
            "TUNESERVE_DATA_DIR": str(data_dir),
            "TUNESERVE_PORT": str(port),
            "TUNESERVE_MODELS_DIR": str(MODELS_DIR),
            "TUNESERVE_RAY_NUM_CPUS": "4",
            **({} if serve else {"TUNESERVE_SERVED_MODELS": ""}),
            **extra_env,
        }
    )
    return RunningStack(data_dir, port, env)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The shared stack of the test session, serving SmolLM2 with vLLM.

    It serves in float32: in bfloat16, a batch's shape changes the rounding of the matmuls enough to flip
    near-tied greedy tokens (seen even with the base model alone), which would make "the same answer in a
    batch as alone" depend on luck. Throughput is measured in bfloat16 (bench/bench_serving.py).

    TUNESERVE_TEST_STACK=<data dir> runs the tests against a stack a developer started (with
    TUNESERVE_SERVING_DTYPE=float32 and TUNESERVE_RAY_NUM_CPUS=4) instead of starting one."""
    reuse = os.environ.get("TUNESERVE_TEST_STACK")
    if reuse:  # a developer's stack that is already up (same settings as below): no start, no stop
        data_dir = Path(reuse)
        port = int(json.loads((data_dir / "run" / "stack.json").read_text())["base_url"].rsplit(":", 1)[1])
        env = {**make_stack(data_dir).env, "TUNESERVE_PORT": str(port)}
        env.pop("TUNESERVE_SERVED_MODELS")
        yield RunningStack(data_dir, port, env)
        return
    running = make_stack(tmp_path_factory.mktemp("stack"), serve=True, TUNESERVE_SERVING_DTYPE="float32")
    running.up()
    try:
        yield running
    finally:
        running.down()
