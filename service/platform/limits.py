"""Per-tenant limits on the serving path: requests per minute and concurrent streams. Pure logic with an
injectable clock; one limiter per API process (the embedded stack has one ingress, so these are the
stack's limits; with several ingress replicas each enforces them on its own share).

Over a limit the caller gets a 429 with `Retry-After`; every answer within it carries OpenAI's
`x-ratelimit-*` headers, so the official clients back off on their own.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from service.platform.errors import ApiError

WINDOW_S = 60.0


@dataclass
class Admission:
    """A request let through: the headers to send, and the stream slot to give back when it ends."""

    headers: dict[str, str]
    release: Callable[[], None]


@dataclass
class TenantLimits:
    requests_per_minute: int
    concurrent_streams: int
    clock: Callable[[], float] = time.monotonic
    _requests: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _streams: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, tenant: str, stream: bool, exempt: bool = False) -> Admission:
        """Count one request of `tenant` (and hold a stream slot for a stream), or a 429. An `exempt`
        caller (the admin) is let through uncounted."""
        if exempt:
            return Admission({}, _nothing)
        with self._lock:
            now = self.clock()
            window = self._requests[tenant]
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= self.requests_per_minute:
                retry = max(1, math.ceil(window[0] + WINDOW_S - now))
                raise ApiError(
                    429,
                    f"Rate limit reached: {self.requests_per_minute} requests per minute for your "
                    f"organization; try again in {retry} s.",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(retry), **self._headers(tenant, now)},
                )
            if stream and self._streams[tenant] >= self.concurrent_streams:
                raise ApiError(
                    429,
                    f"Too many streams at once: {self.concurrent_streams} for your organization; wait for "
                    "one to end.",
                    code="too_many_streams",
                    headers={"Retry-After": "1"},
                )
            window.append(now)
            if stream:
                self._streams[tenant] += 1
            headers = self._headers(tenant, now)
        return Admission(headers, self._releaser(tenant) if stream else _nothing)

    def _headers(self, tenant: str, now: float) -> dict[str, str]:
        window = self._requests[tenant]
        reset = max(0.0, window[0] + WINDOW_S - now) if window else 0.0
        return {
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-remaining-requests": str(max(0, self.requests_per_minute - len(window))),
            "x-ratelimit-reset-requests": f"{reset:.0f}s",
        }

    def _releaser(self, tenant: str) -> Callable[[], None]:
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._streams[tenant] -= 1

        return release


def _nothing() -> None:
    pass
