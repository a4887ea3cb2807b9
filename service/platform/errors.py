"""The one error type of the service: raised anywhere below a route, reported in OpenAI's shape (see
`service.api.errors`); and how a wrapped exception is told in one line."""

from __future__ import annotations

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error the API reports to the caller; raise it anywhere below a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def root_cause(exc: BaseException) -> str:
    """The innermost error's type and last meaningful line: Ray and vLLM wrap errors in several layers."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if callable(getattr(exc, "details", None)) and callable(getattr(exc, "code", None)):
        # A gRPC error (Ray Serve's transport between the API and the engines): its text is a multi-line
        # repr whose last line is ">"; its status and details say what happened.
        return f"{type(exc).__name__}: {getattr(exc.code(), 'name', exc.code())}: {exc.details()}"[:1000]
    lines = [
        line
        for line in str(exc).strip().splitlines()
        if line.strip() and not line.startswith(("Traceback", "  "))
    ]
    detail = lines[-1] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {detail}"[:1000]
