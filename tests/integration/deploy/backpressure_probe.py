"""Run as a script by test_backpressure.py, on a Ray of its own: `ServeLLMEngine` against a real Ray Serve
deployment that holds each request a while, with room for one running and one waiting request. Prints,
as JSON, what each of three chats started a second apart got."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import ray
from ray import serve

from deploy.llm import ServeLLMEngine
from service.models.registry import ResolvedModel
from service.platform.errors import ApiError

HOLD_S = 3.0
RESULT = "backpressure-probe:"  # the line to read: Ray's own shutdown lines go to stdout too


@serve.deployment(max_ongoing_requests=1, max_queued_requests=1)
class SlowEngine:
    """Answers a chat the way Ray Serve LLM's LLMServer streams one, after HOLD_S seconds."""

    async def chat(self, request, raw_request_info=None):
        await asyncio.sleep(HOLD_S)
        yield ['data: {"choices": []}\n\n']


async def chats(engine: ServeLLMEngine, n: int) -> list[dict]:
    model = ResolvedModel(id="slow", base_model="slow", base_path=Path("."))
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def one() -> dict:
        try:
            stream = await engine.generate("chat", model, dict(body))
            return {"status": 200, "body": "".join([chunk async for chunk in stream])}
        except ApiError as err:
            return {"status": err.status, "code": err.code, "message": err.message, "headers": err.headers}

    await one()  # the handle's router has the deployment's limits from then on
    started = []
    for _ in range(n):  # a second apart: the first runs, the second waits for it, the third finds both taken
        started.append(asyncio.create_task(one()))
        await asyncio.sleep(1)
    return list(await asyncio.gather(*started))


def main() -> None:
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # never the stack's
    try:
        handle = serve.run(SlowEngine.bind(), name="backpressure", route_prefix=None)
        print(RESULT, json.dumps(asyncio.run(chats(ServeLLMEngine({"slow": handle}), 3))), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
