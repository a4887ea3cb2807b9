"""Where CPU-heavy or long work of a request runs (document ingestion, evaluation batches): a Ray task in
the stack (`deploy.tasks.RayTaskRunner`), a thread in unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class TaskRunner(Protocol):
    async def run(self, fn: Callable, *args: Any, cpus: float = 1) -> Any:
        """fn(*args) somewhere else, holding `cpus` CPUs; its exception is raised here (Ray's wrapper is an
        instance of it)."""


class ThreadRunner:
    async def run(self, fn: Callable, *args: Any, cpus: float = 1) -> Any:
        return await asyncio.to_thread(fn, *args)
