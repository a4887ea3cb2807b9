"""Per-tenant limits on the serving path: requests and tokens per minute, concurrent streams. Pure logic
with an injectable clock; one limiter per API process (the embedded stack has one ingress, so these are the
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
from typing import NamedTuple

from service.platform.errors import ApiError

WINDOW_S = 60.0


class Rates(NamedTuple):
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_streams: int


@dataclass
class Admission:
    """A request let through: the headers to send, and the stream slot to give back when it ends."""

    headers: dict[str, str]
    release: Callable[[], None]


@dataclass
class TenantLimits:
    """Tokens are counted when an answer's usage is known (`record_tokens`): a tenant past its tokens of
    the last minute is refused until enough of them age out (0: no token limit)."""

    requests_per_minute: int
    concurrent_streams: int
    tokens_per_minute: int = 0
    # A tenant's own (requests per minute, tokens per minute, streams), when the admin set them.
    per_tenant: Callable[[str], Rates] | None = None
    clock: Callable[[], float] = time.monotonic
    _requests: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _tokens: dict[str, deque[tuple[float, int]]] = field(default_factory=lambda: defaultdict(deque))
    _streams: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, tenant: str, stream: bool, exempt: bool = False) -> Admission:
        """Count one request of `tenant` (and hold a stream slot for a stream), or a 429. An `exempt`
        caller (the admin) is let through uncounted."""
        if exempt:
            return Admission({}, _nothing)
        rpm, tpm, streams = self.rates(tenant)
        with self._lock:
            now = self.clock()
            window = self._requests[tenant]
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= rpm:
                retry = max(1, math.ceil(window[0] + WINDOW_S - now))
                raise self._rate_error(f"{rpm} requests per minute", retry, tenant, now, rpm, tpm)
            tokens = self._tokens[tenant]
            while tokens and tokens[0][0] <= now - WINDOW_S:
                tokens.popleft()
            used = sum(n for _, n in tokens)
            if tpm and used >= tpm:
                # Until enough of the minute's tokens age out to go under the limit.
                over, retry = used - tpm, 1
                for at, n in tokens:
                    over -= n
                    if over < 0:
                        retry = max(1, math.ceil(at + WINDOW_S - now))
                        break
                raise self._rate_error(f"{tpm} tokens per minute", retry, tenant, now, rpm, tpm)
            if stream and self._streams[tenant] >= streams:
                raise ApiError(
                    429,
                    f"Too many streams at once: {streams} for your organization; wait for one to end.",
                    code="too_many_streams",
                    headers={"Retry-After": "1"},
                )
            window.append(now)
            if stream:
                self._streams[tenant] += 1
            headers = self._headers(tenant, now, rpm, tpm)
        return Admission(headers, self._releaser(tenant) if stream else _nothing)

    def record_tokens(self, tenant: str, n: int) -> None:
        """Count `n` tokens (prompt and completion) of an answer of `tenant`."""
        if n > 0:
            with self._lock:
                self._tokens[tenant].append((self.clock(), n))

    def _rate_error(self, what: str, retry: int, tenant: str, now: float, rpm: int, tpm: int) -> ApiError:
        return ApiError(
            429,
            f"Rate limit reached: {what} for your organization; try again in {retry} s.",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(retry), **self._headers(tenant, now, rpm, tpm)},
        )

    def rates(self, tenant: str) -> Rates:
        if self.per_tenant is not None:
            return self.per_tenant(tenant)
        return Rates(self.requests_per_minute, self.tokens_per_minute, self.concurrent_streams)

    def _headers(self, tenant: str, now: float, rpm: int, tpm: int) -> dict[str, str]:
        window = self._requests[tenant]
        reset = max(0.0, window[0] + WINDOW_S - now) if window else 0.0
        headers = {
            "x-ratelimit-limit-requests": str(rpm),
            "x-ratelimit-remaining-requests": str(max(0, rpm - len(window))),
            "x-ratelimit-reset-requests": f"{reset:.0f}s",
        }
        if tpm:
            tokens = self._tokens[tenant]
            used = sum(n for _, n in tokens)
            reset_tokens = max(0.0, tokens[0][0] + WINDOW_S - now) if tokens else 0.0
            headers |= {
                "x-ratelimit-limit-tokens": str(tpm),
                "x-ratelimit-remaining-tokens": str(max(0, tpm - used)),
                "x-ratelimit-reset-tokens": f"{reset_tokens:.0f}s",
            }
        return headers

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
