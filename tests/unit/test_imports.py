"""`import service` (and every light module) must not load torch, vllm, deepspeed or ray."""

import subprocess
import sys

LIGHT_MODULES = [
    "service",
    "service.api.app",
    "service.cli.main",
    "service.stack.supervisor",
    "service.platform.settings",
    "service.platform.auth",
    "service.platform.storage",
    "service.platform.db",
    "service.protocol.common",
    "service.protocol.admin",
    "service.platform.errors",
    "service.models.base_models",
    "deploy.app",
    "trainers",
    "rag",
    "evals",
    "evals.runner",
    "evals.metrics",
    "service.cli.evals",
]
HEAVY = ["torch", "vllm", "deepspeed", "ray", "transformers"]


def test_light_modules_do_not_import_heavy_frameworks() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {LIGHT_MODULES!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"


def test_the_check_itself_sees_a_heavy_import() -> None:
    """Guard against a check that cannot fail: importing ray directly must be seen."""
    code = "import sys, ray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
