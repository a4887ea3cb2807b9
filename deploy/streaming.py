"""Coalescing a streamed answer's chunks under load.

Every chunk of a streamed answer crosses two Ray hops (the vLLM replica -> the API ingress -> the HTTP
proxy), and on a small machine each crossing costs CPU that the engine needs (bench/RESULTS.md: 16 streams
sent token by token took a third of a core in those three processes and ran at half vLLM's speed). So the
replica sends each stream's chunks in lists: the first alone and at once (time to first token), then
whatever arrived while it waited an interval that grows with the number of open streams, so that the
replica sends about `messages_per_s` messages in all. One stream alone is sent token by token; sixteen
send a few tokens per message. Every token stays its own SSE event: only the messages are fewer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")

MAX_INTERVAL_S = 0.5  # the longest a token waits for company, however many streams are open


def interval_s(open_streams: int, messages_per_s: float) -> float:
    """How long each of `open_streams` streams waits between two messages, to send `messages_per_s`."""
    if messages_per_s <= 0:
        return 0.0
    return min(MAX_INTERVAL_S, max(open_streams, 1) / messages_per_s)


async def coalesce(items: AsyncIterator[T], wait_s: Callable[[], float]) -> AsyncIterator[list[T]]:
    """`items` in lists: the first at once, then after each list what arrived during `wait_s()` seconds
    (at least one item per list), and what is left as soon as `items` ends: a stream's last tokens (and
    the end of a burst of streams) do not wait out the interval. An error of `items` is raised after the
    items before it."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def read() -> None:
        try:
            async for item in items:
                queue.put_nowait(item)
        finally:
            queue.put_nowait(end)

    reader = asyncio.create_task(read())
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            done = batch[-1] is end
            if done:
                batch.pop()
            if batch:
                yield batch
            if done:
                await reader  # raises the error that ended `items`, if any
                return
            wait = wait_s()
            if wait > 0:
                await asyncio.wait([reader], timeout=wait)  # cut short when `items` ends; never cancels it
            else:
                await asyncio.sleep(0)
    finally:
        reader.cancel()
