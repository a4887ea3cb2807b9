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

    def body(self) -> dict:
        """The error in OpenAI's shape, as a response body."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def schema_error(errors: list) -> ApiError:
    """A request that fails its schema (pydantic's `errors()`): a 400 as OpenAI answers a malformed
    request, naming the first field at fault."""
    first = _most_telling(errors)
    param = _field(first)
    reason = str(first.get("msg")).removeprefix("Value error, ")  # pydantic's prefix for our validators
    message = f"{param}: {reason}" if param else reason
    return ApiError(400, message, param=param or None, code="invalid_value")


def _field(error: dict) -> str:
    """The field an error is about, as a dotted path: `messages.0.role`."""
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    # A tagged union repeats its tag in the path (integrations.0.wandb.wandb.project): once is enough;
    # a plain union names the member it tried (n_epochs.constrained-int): not a field.
    loc = [p for i, p in enumerate(loc) if (i == 0 or p != loc[i - 1]) and not _union_member(p)]
    return ".".join(loc)


def _most_telling(errors: list) -> dict:
    """The error to report. A value that fails a union fails each member: `stop: ["a"] * 100` is not a
    string, and is a list of more than 4. The first is pydantic's first member's complaint about the
    type; one about the value of the member whose type it has says what is wrong."""
    first = errors[0]
    same_field = [e for e in errors if _field(e) == _field(first)]
    return next((e for e in same_field if not str(e.get("type", "")).endswith("_type")), first)


def _union_member(part: str) -> bool:
    """Whether a location part is pydantic's name for a union member (`int`, `constrained-int`,
    `literal['auto']`, `list[str]`) rather than a field name or an index."""
    return "[" in part or "-" in part or part in ("int", "float", "str", "bool", "none", "list", "dict")


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
