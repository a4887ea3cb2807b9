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


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other in a cycle (strongly connected components of two or
    more), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    """Every import counts, also those inside functions (`lint-imports` checks the layers between them)."""
    import grimp

    graph = grimp.build_graph(*PACKAGES)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert cycles(edges) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
