"""`import service` (and every light module) must not load torch, vllm, deepspeed or ray."""

import subprocess
import sys

LIGHT_MODULES = [
    "service",
    "service.api.app",
    "service.cli.main",
    "service.cli.client",
    "service.stack.supervisor",
    "service.platform.settings",
    "service.platform.auth",
    "service.platform.storage",
    "service.platform.db",
    "service.platform.errors",
    "service.platform.hardware",
    "service.protocol.common",
    "service.protocol.admin",
    "service.protocol.fine_tuning",
    "service.models.base_models",
    "service.fine_tuning.driver",
    "deploy.app",
    "trainers",
    "trainers.ray_run",
    "rag",
    "evals",
    "evals.runner",
    "evals.metrics",
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


PACKAGES = ("service", "trainers", "rag", "deploy", "evals")


def in_cycles(graph) -> list[str]:  # a grimp.ImportGraph
    """The modules that import themselves through others."""
    return sorted(
        m
        for m in graph.modules
        if graph.find_modules_that_directly_import(m) & graph.find_upstream_modules(m)
    )


def test_no_module_imports_itself_through_others() -> None:
    """Every import counts, also those inside functions (`lint-imports` checks the layers between them)."""
    import grimp

    assert in_cycles(grimp.build_graph(*PACKAGES)) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    import grimp

    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]:
        graph.add_import(importer=importer, imported=imported)
    assert in_cycles(graph) == ["a", "b", "c"]
