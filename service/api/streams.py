"""Server-sent-event streams that end when the key that opened them stops being valid.

A stream (a chat answer, a job's events followed live) can outlive the request that authorised it by
minutes or forever; revoking the key must end it. The key is checked every `interval_s` while the stream
flows and while it waits for its next chunk, and the stream then ends with an error event in OpenAI's
shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable

from service.api.errors import error_body

CHECK_INTERVAL_S = 1.0
REVOKED = error_body(
    "The API key of this stream was revoked; the stream has ended.",
    "authentication_error",
    code="invalid_api_key",
)


async def while_authorized(
    stream: AsyncIterator[str], still_valid: Callable[[], bool], interval_s: float = CHECK_INTERVAL_S
) -> AsyncIterator[str]:
    """`stream`, ended with an error event as soon as `still_valid()` (blocking: run in a thread) is False."""
    chunks = aiter(stream)
    checked = time.monotonic()
    try:
        while True:
            pending = asyncio.ensure_future(anext(chunks))
            while True:  # until the next chunk, checking the key whenever a check is due
                due = checked + interval_s - time.monotonic()
                done, _ = await asyncio.wait({pending}, timeout=max(0.0, due))
                if time.monotonic() - checked >= interval_s:
                    checked = time.monotonic()
                    if not await asyncio.to_thread(still_valid):
                        pending.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await pending
                        yield f"data: {json.dumps(REVOKED)}\n\n"
                        return
                if done:
                    break
            try:
                chunk = pending.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
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
