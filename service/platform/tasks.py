"""Where CPU-heavy or long work of a request runs (document ingestion, evaluation batches): a Ray task in
the stack (`deploy.tasks.RayTaskRunner`), a thread in unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol


class TaskRunner(Protocol):
    async def run(self, fn: Callable, *args: Any, cpus: float = 1) -> Any:
        """fn(*args) somewhere else, holding `cpus` CPUs; its exception is raised here (Ray's wrapper is an
        instance of it)."""


class ThreadRunner:
    async def run(self, fn: Callable, *args: Any, cpus: float = 1) -> Any:
        return await asyncio.to_thread(fn, *args)


class Background:
    """Long-lived coroutines of the API process (ingestion, evaluation runs), started from any thread: routes
    that block run in FastAPI's threadpool, and what they start runs on the app's event loop."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: set[asyncio.Task] = set()
        self.driven: set[str] = set()  # the keys of `drive`'s work still running

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop to run on: the app's, when its lifespan starts."""
        self.loop = loop

    def spawn(self, start: Callable[[], Coroutine | None]) -> None:
        """Call `start` on the loop; the coroutine it returns (if any) runs there as a task."""

        def create() -> None:
            coro = start()
            if coro is not None:
                task = self.loop.create_task(coro)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            create()
        else:
            self.loop.call_soon_threadsafe(create)

    def drive(self, key: str, work: Callable[[], Coroutine]) -> None:
        """Run `work()` on the loop (from any thread) unless the work under `key` (a run's, a batch's id)
        still runs there: a second start of the same work is left alone."""

        def begin() -> Coroutine | None:
            if key in self.driven:
                return None
            self.driven.add(key)
            return self._driven(key, work())

        self.spawn(begin)

    async def _driven(self, key: str, work: Coroutine) -> None:
        try:
            await work
        finally:
            self.driven.discard(key)
