"""Ray tasks for the API's CPU-heavy or long work: each call is one task (one CPU unless told), so a batch
of files is ingested in parallel across the cluster's cores and nodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RayTaskRunner:
    def __init__(self) -> None:
        self._remote: dict[Callable, Any] = {}

    async def run(self, fn: Callable, *args: Any, cpus: float = 1) -> Any:
        import ray

        if fn not in self._remote:
            self._remote[fn] = ray.remote(max_retries=1)(fn)
        # As many OpenMP threads as the task holds CPUs. A task inherits the environment of the API replica
        # that submits it, where torch may use every core (deploy.app.api_env): a batch of files ingested in
        # parallel then ran 2 threads per task on 2 cores, at 43 chunks/s against 76 (bench/bench_rag.py).
        threads = {"OMP_NUM_THREADS": str(max(1, int(cpus)))}
        options = {"num_cpus": cpus, "runtime_env": {"env_vars": threads}}
        try:
            return await self._remote[fn].options(**options).remote(*args)
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause if exc.cause is not None else exc from None
