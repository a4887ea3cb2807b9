"""What an engine error says to the caller: the innermost error, in one line."""

from __future__ import annotations

import grpc
from grpc.aio import AioRpcError, Metadata

from service.platform.errors import root_cause


def test_the_innermost_error_and_its_last_meaningful_line() -> None:
    try:
        try:
            raise ValueError("Traceback (most recent call last):\n  File x\nadapter rank 64 > 16")
        except ValueError as inner:
            raise RuntimeError("the replica failed") from inner
    except RuntimeError as outer:
        assert root_cause(outer) == "ValueError: adapter rank 64 > 16"


def test_a_grpc_error_says_its_status_and_details() -> None:
    # Ray Serve's gRPC transport between the API and the vLLM replicas; str() of it ends in ">".
    exc = AioRpcError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(), details="failed to connect")
    assert root_cause(exc) == "AioRpcError: UNAVAILABLE: failed to connect"
