"""Coalescing a stream's chunks: the first at once, later ones in lists, nothing lost or reordered."""

from __future__ import annotations

import asyncio
import time

import pytest

from deploy.streaming import MAX_INTERVAL_S, coalesce, interval_s


def test_the_interval_grows_with_open_streams_up_to_a_cap():
    assert interval_s(1, 64) == pytest.approx(1 / 64)
    assert interval_s(16, 64) == pytest.approx(0.25)
    assert interval_s(1000, 64) == MAX_INTERVAL_S
    assert interval_s(0, 64) == pytest.approx(1 / 64)  # counted before it is open
    assert interval_s(16, 0) == 0.0  # no budget: every chunk at once


async def ticking(n: int, every_s: float, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("engine died")
        yield i
        await asyncio.sleep(every_s)


async def collect(stream) -> list[tuple[float, list]]:
    start = time.perf_counter()
    return [(time.perf_counter() - start, batch) async for batch in stream]


def test_the_first_chunk_is_sent_alone_and_at_once_then_chunks_come_in_lists():
    # 20 chunks over ~0.1 s, and a wait of 0.5 s after each message: the first goes before any wait, the
    # other 19 arrive during the one wait and go together.
    batches = asyncio.run(collect(coalesce(ticking(20, 0.005), lambda: 0.5)))
    first_at, first = batches[0]
    assert first == [0] and first_at < 0.5
    assert [b for _, b in batches] == [[0], list(range(1, 20))]


def test_without_a_wait_every_chunk_is_its_own_message():
    batches = asyncio.run(collect(coalesce(ticking(5, 0.01), lambda: 0.0)))
    assert [b for _, b in batches] == [[0], [1], [2], [3], [4]]


def test_an_error_comes_after_the_chunks_before_it():
    received = []

    async def run():
        async for batch in coalesce(ticking(10, 0.005, fail_at=6), lambda: 0.02):
            received.extend(batch)

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(run())
    assert received == list(range(6))


def test_a_consumer_that_goes_away_stops_the_reader():
    reads = []

    async def endless():
        i = 0
        while True:
            reads.append(i)
            yield i
            i += 1
            await asyncio.sleep(0.005)

    async def run():
        stream = coalesce(endless(), lambda: 0.01)
        async for _ in stream:
            break
        await stream.aclose()
        count = len(reads)
        await asyncio.sleep(0.05)
        return count

    count = asyncio.run(run())
    assert len(reads) == count  # nothing read after the consumer left


def test_what_is_left_goes_as_soon_as_the_stream_ends():
    # A wait of an hour after each message: the chunks that arrived meanwhile, and the end, go when the
    # stream ends (the last tokens of every stream in a burst would otherwise wait out the interval).
    async def run():
        return await asyncio.wait_for(collect(coalesce(ticking(5, 0.01), lambda: 3600.0)), 30)

    assert [b for _, b in asyncio.run(run())] == [[0], [1, 2, 3, 4]]

    async def failing():
        async for _ in coalesce(ticking(5, 0.01, fail_at=3), lambda: 3600.0):
            pass

    with pytest.raises(RuntimeError, match="engine died"):
        asyncio.run(asyncio.wait_for(failing(), 30))
