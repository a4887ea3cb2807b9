"""Prometheus metrics of the model endpoints: requests, tokens and latency per model and tenant, and time
to first token of streams; GET /metrics adds what the Ray cluster exports (Ray Serve's and vLLM's).

Streams are metered without the client noticing: the engine is always asked for the usage chunk
(`stream_options.include_usage`), which reaches the client only when it asked for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.platform.errors import ApiError

disable_created_metrics()  # no `_created` series beside every counter

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
UNKNOWN = "-"  # the model label of a request for a model that does not exist (no label per typo)
# Errors raised before the model was resolved: their model label is UNKNOWN, so that a caller cannot make
# a series per made-up model name.
UNLABELLED = frozenset({"model_not_found", "rate_limit_exceeded", "too_many_streams"})


class ApiMetrics:
    def __init__(
        self,
        cluster: Callable[[], list[str]] | None = None,
        on_tokens: Callable[[str, int], None] | None = None,
    ) -> None:
        """`cluster`: the Prometheus texts the cluster's nodes export (none in unit tests); `on_tokens`:
        told each answer's tenant and total tokens (the tokens-per-minute limit)."""
        self.cluster = cluster
        self.on_tokens = on_tokens
        self.registry = CollectorRegistry()
        labels = ["endpoint", "model", "tenant"]
        self.requests = Counter(
            "tuneserve_requests", "Requests by endpoint, model, tenant and HTTP status.",
            [*labels, "status"], registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "tuneserve_tokens", "Tokens read (prompt) and written (completion).",
            [*labels, "kind"], registry=self.registry,
        )  # fmt: skip
        self.duration = Histogram(
            "tuneserve_request_duration_seconds", "From the request to the answer's last byte.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.first_token = Histogram(
            "tuneserve_time_to_first_token_seconds", "From a streamed request to its first chunk.",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def record(
        self,
        endpoint: str,
        model: str,
        tenant: str,
        status: int,
        start: float,
        usage: dict | None,
        rate_limited: bool = True,
    ) -> None:
        """Count a request, its latency and tokens; its tokens count against the tenant's per-minute
        limit unless not `rate_limited` (a batch's)."""
        self.requests.labels(endpoint, model, tenant, str(status)).inc()
        self.duration.labels(endpoint, model).observe(time.perf_counter() - start)
        total = 0
        for kind in ("prompt", "completion"):
            n = (usage or {}).get(f"{kind}_tokens")
            if n:
                self.tokens.labels(endpoint, model, tenant, kind).inc(n)
                total += n
        if total and rate_limited and self.on_tokens is not None:
            self.on_tokens(tenant, total)

    def observer(
        self, endpoint: str
    ) -> Callable[[str | None, str, float, dict | None, ApiError | None], None]:
        """What records the requests of background work (a batch's) under `endpoint`: (model, tenant,
        start, usage, error), outside the tenant's per-minute limits; a model of None (a request that
        failed its schema) or not found is counted under UNKNOWN."""

        def observe(
            model: str | None, tenant: str, start: float, usage: dict | None, error: ApiError | None
        ) -> None:
            if error is None:
                self.record(endpoint, str(model), tenant, 200, start, usage, rate_limited=False)
            else:  # no tokens to count against a limit
                self.failed(endpoint, UNKNOWN if model is None else model, tenant, error, start)

        return observe

    def failed(self, endpoint: str, model: str, tenant: str, error: ApiError, start: float) -> None:
        """Record a request that ended in `error`; one that failed before its model was resolved is
        counted under model UNKNOWN."""
        label = UNKNOWN if error.code in UNLABELLED else model
        self.record(endpoint, label, tenant, error.status, start, None)

    async def metered(
        self,
        stream: AsyncIterator[str],
        endpoint: str,
        model: str,
        tenant: str,
        start: float,
        keep_usage: bool,
    ) -> AsyncIterator[str]:
        """The SSE stream, recorded when it ends (however it ends); its usage chunk dropped unless the
        client asked for it."""
        usage = None
        first = True
        try:
            async for packet in stream:
                if first:
                    self.first_token.labels(endpoint, model).observe(time.perf_counter() - start)
                    first = False
                if '"usage":{' in packet or '"usage": {' in packet:
                    found, packet = _take_usage(packet, keep_usage)
                    usage = found or usage
                    if not packet:
                        continue
                yield packet
        finally:
            self.record(endpoint, model, tenant, 200, start, usage)

    def render(self) -> bytes:
        """This API's metrics, then the cluster's (families of several nodes merged)."""
        out = generate_latest(self.registry)
        if self.cluster is not None:
            merged = CollectorRegistry()
            merged.register(_Families(self.cluster()))
            out += generate_latest(merged)
        return out


def _take_usage(packet: str, keep: bool) -> tuple[dict | None, str]:
    """The usage of a packet's usage-only event, and the packet without that event unless `keep`."""
    usage, kept = None, []
    for event in packet.split("\n\n"):
        if event.startswith("data: {"):
            body = json.loads(event[len("data: ") :])
            if body.get("usage") and not body.get("choices"):
                usage = body["usage"]
                if not keep:
                    continue
        if event:
            kept.append(event)
    return usage, "".join(f"{e}\n\n" for e in kept)


class _Families:
    """A collector of the metric families in Prometheus texts, the samples of a family's namesakes joined."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def collect(self):
        families: dict = {}
        for text in self.texts:
            try:
                for family in text_string_to_metric_families(text):
                    if family.name in families:
                        families[family.name].samples.extend(family.samples)
                    else:
                        families[family.name] = family
            except ValueError:  # a node's text we cannot parse: leave that node out
                continue
        yield from families.values()
