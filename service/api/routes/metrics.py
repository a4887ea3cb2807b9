"""GET /metrics: Prometheus metrics (admin key)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import CurrentPrincipal, Svc
from service.platform.errors import ApiError

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (admin key)", response_class=Response)
def metrics(services: Svc, principal: CurrentPrincipal) -> Response:
    """Per model and tenant: `tuneserve_requests_total` (by endpoint and status), `tuneserve_tokens_total`
    (prompt and completion), `tuneserve_request_duration_seconds` and
    `tuneserve_time_to_first_token_seconds`; then what the Ray cluster's nodes export (Ray Serve's request
    metrics, vLLM's engine metrics). Scrape it with the admin key as a bearer token."""
    if not principal.is_admin:
        raise ApiError(403, "Metrics need the admin key.", code="forbidden")
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
