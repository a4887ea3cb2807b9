"""Where CPU-heavy work of a request runs (document ingestion): a Ray task in the stack
(`deploy.tasks.RayTaskRunner`), a thread in unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class TaskRunner(Protocol):
    async def run(self, fn: Callable, *args: Any) -> Any:
        """fn(*args) somewhere else; its exception is raised here (Ray's wrapper is an instance of it)."""


class ThreadRunner:
    async def run(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)
