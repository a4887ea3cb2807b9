"""Ray tasks for the API's CPU-heavy work: each call is one task with one CPU, so a batch of files is
ingested in parallel across the cluster's cores and nodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RayTaskRunner:
    def __init__(self, num_cpus: float = 1) -> None:
        self.num_cpus = num_cpus
        self._remote: dict[Callable, Any] = {}

    async def run(self, fn: Callable, *args: Any) -> Any:
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(num_cpus=self.num_cpus, max_retries=1)(fn)
        try:
            return await self._remote[fn].remote(*args)
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause if exc.cause is not None else exc from None
