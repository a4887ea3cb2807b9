"""The container image (Dockerfile) builds, runs as uid 1000 with no base model weights inside (the
small default embedder, ~90 MB, is part of the service), and its
`tuneserve` and engine import. Needs a Docker daemon; where none answers (these CI machines) it skips."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


pytestmark = pytest.mark.skipif(not _docker_answers(), reason="no Docker daemon answers here")


def test_the_cpu_image_builds_and_runs() -> None:
    subprocess.run(["docker", "build", "--target", "cpu", "-t", "tuneserve:test", str(REPO)], check=True)

    def run(*cmd: str) -> str:
        return subprocess.run(
            ["docker", "run", "--rm", "tuneserve:test", *cmd], capture_output=True, text=True, check=True
        ).stdout

    assert run("id", "-u").strip() == "1000"
    assert "up" in run("tuneserve", "--help")
    assert run("python", "-c", "import vllm, deepspeed, ray; print('ok')").strip().endswith("ok")
    weights = run("bash", "-c", "find / -xdev \\( -name '*.safetensors' -o -name '*.gguf' \\) -size +150M")
    assert weights.strip() == "", weights
