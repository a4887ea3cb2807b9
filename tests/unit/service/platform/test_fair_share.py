"""Fair sharing of work slots: a tenant with a long queue does not make another wait for all of it."""

from __future__ import annotations

import asyncio

from service.platform.fair_share import FairShare


def test_waiting_work_is_served_round_robin_by_tenant() -> None:
    order: list[str] = []

    async def work(share: FairShare, name: str) -> None:
        async with share.slot(name[0]):
            order.append(name)
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        share = FairShare(slots=1)
        flood = [asyncio.create_task(work(share, f"a{i}")) for i in range(6)]  # tenant a queues six
        await asyncio.sleep(0.001)
        quiet = [asyncio.create_task(work(share, f"b{i}")) for i in range(2)]  # then b queues two
        await asyncio.gather(*flood, *quiet)
        assert share.running == 0

    asyncio.run(scenario())
    assert order == ["a0", "a1", "b0", "a2", "b1", "a3", "a4", "a5"]  # b waits one turn, not five


def test_a_cancelled_waiter_gives_up_its_place_and_slots_are_never_lost() -> None:
    async def scenario() -> None:
        share = FairShare(slots=2)
        hold = asyncio.Event()

        async def work(tenant: str) -> None:
            async with share.slot(tenant):
                await hold.wait()

        running = [asyncio.create_task(work("a")) for _ in range(2)]
        waiting = [asyncio.create_task(work(t)) for t in ("a", "b", "b")]
        await asyncio.sleep(0.01)
        assert share.running == 2
        waiting[1].cancel()
        hold.set()
        await asyncio.gather(*running, waiting[0], waiting[2])
        assert share.running == 0 and not share._waiting

    asyncio.run(scenario())
