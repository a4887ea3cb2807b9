"""Which object store failures a transfer tries again: the server's, never the caller's."""

from __future__ import annotations

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, EndpointConnectionError

from service.platform.storage import is_transient


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "UploadPart"
    )


def _as_boto3_raises_it(error: ClientError) -> S3UploadFailedError:
    try:
        raise error
    except ClientError as exc:  # boto3's upload_file raises its own type inside this handler
        try:
            raise S3UploadFailedError(f"Failed to upload: {exc}")
        except S3UploadFailedError as wrapped:
            return wrapped


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("InternalError", 500, True),
        ("ServiceUnavailable", 503, True),
        ("SlowDown", 503, True),
        ("RequestTimeout", 400, True),
        ("AccessDenied", 403, False),
        ("NoSuchKey", 404, False),
        ("EntityTooLarge", 400, False),
    ],
)
def test_server_errors_are_transient_the_callers_are_not(code: str, status: int, transient: bool) -> None:
    error = _client_error(code, status)
    assert is_transient(error) is transient
    assert is_transient(_as_boto3_raises_it(error)) is transient


def test_errors_with_no_answer_from_the_server_are_not_transient() -> None:
    assert not is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert not is_transient(ValueError("x"))
