"""Per-tenant quotas on what a tenant keeps or runs at once: stored bytes, vector stores, evaluation runs in
flight. Each is a setting (0: no limit); over one, the request gets a 429 in OpenAI's shape that names the
quota, what is used, and the setting that raises it. (Rates — requests per minute, open streams — are
`platform.limits`.)"""

from __future__ import annotations

from service.platform.errors import ApiError


def check_quota(
    what: str, used: int, adding: int, limit: int, setting: str, retry_after_s: int | None = None
) -> None:
    """Raise the 429 of quota `what` if `used + adding` is over `limit` (0: unlimited). `retry_after_s`: for
    a quota that frees itself (work in flight), when to try again."""
    if limit <= 0 or used + adding <= limit:
        return
    message = (
        f"Quota reached: {what} — {used} used of {limit} for your organization"
        + (f", and this needs {adding} more" if adding > 1 else "")
        + f". Free some up, or ask the admin to raise {setting}."
    )
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s else {}
    raise ApiError(429, message, code="quota_exceeded", headers=headers)
