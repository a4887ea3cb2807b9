"""Fair sharing of a pool of work slots between tenants (evaluation batches, file ingestion).

At most `slots` pieces of work run at once; when they are all taken, waiting work is served round-robin
by tenant, so one tenant queueing a thousand batches delays another tenant's next batch by at most one
turn of each tenant with work waiting, not by its whole queue. One instance per process, on its event
loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator


class FairShare:
    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.running = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one slot for the block, waiting for this tenant's turn when none is free."""
        if self.running < self.slots and not self._waiting:
            self.running += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(tenant, deque()).append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # the slot was handed over: pass it on
                    self._release()
                else:
                    self._forget(tenant, turn)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the freed slot to the next tenant in turn (which then goes to the back), else free it."""
        while self._waiting:
            tenant, queue = next(iter(self._waiting.items()))
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(tenant)
            else:
                del self._waiting[tenant]
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1

    def _forget(self, tenant: str, turn: asyncio.Future) -> None:
        queue = self._waiting.get(tenant)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._waiting[tenant]
