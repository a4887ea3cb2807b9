"""Server-sent-event streams that end when the key that opened them stops being valid.

A stream (a chat answer, a job's events followed live) can outlive the request that authorised it by
minutes or forever; revoking the key (or disabling its tenant) must end it. A watcher checks the key every
`interval_s`; the stream ends with an error event in OpenAI's shape at its next chunk after that. Chat
streams send chunks all the time; a followed job sends a keep-alive comment while it has nothing to say,
so both end within seconds. (A task per chunk, to end an idle stream at once, cost 25 us a chunk.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from service.api.errors import error_body
from service.protocol.chat_stream import ChatAssembly, SseEvents

CHECK_INTERVAL_S = 1.0
REVOKED = error_body(
    "The API key of this stream was revoked (or its organization disabled); the stream has ended.",
    "authentication_error",
    code="invalid_api_key",
)


async def while_authorized(
    stream: AsyncIterator[str], still_valid: Callable[[], bool], interval_s: float = CHECK_INTERVAL_S
) -> AsyncIterator[str]:
    """`stream`, ended with an error event at its first chunk after `still_valid()` (blocking: run in a
    thread) turned False."""
    revoked = asyncio.Event()

    async def watch() -> None:
        while True:
            await asyncio.sleep(interval_s)
            if not await asyncio.to_thread(still_valid):
                revoked.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        async for chunk in stream:
            if revoked.is_set():
                yield f"data: {json.dumps(REVOKED)}\n\n"
                return
            yield chunk
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


async def released_at_end(stream: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """The stream, giving its slot back however it ends (finished, failed, or the client went away)."""
    try:
        async for chunk in stream:
            yield chunk
    finally:
        release()


async def kept_at_end(
    stream: AsyncIterator[str], keep: Callable[[dict], Awaitable[None]]
) -> AsyncIterator[str]:
    """A chat stream passed on unchanged while its chunks are added up; the chat.completion they make is
    kept (`keep`) before the stream's `[DONE]` goes out, so a client that lists it at once finds it. A
    stream that fails, or whose client leaves before its end, keeps nothing."""
    events, assembly, failed = SseEvents(), ChatAssembly(), False
    async for packet in stream:
        for chunk in events.feed(packet):
            failed = failed or "error" in chunk
            assembly.feed(chunk)
        if not failed and "data: [DONE]" in packet:
            await keep(assembly.completion())
        yield packet
