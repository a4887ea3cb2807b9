"""Where an adapter may be imported from besides an upload: a folder of an S3 bucket under a prefix the
admin allows (TUNESERVE_ADAPTER_IMPORT_SOURCES), never of the service's own bucket. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

# S3's bucket naming rules (lower case, digits, dots and hyphens; 3 to 63 characters).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SourceError(ValueError):
    """The source is not an S3 folder the service may read; the message says why."""


@dataclass(frozen=True)
class S3Folder:
    bucket: str
    prefix: str  # "" (the whole bucket) or segments each followed by "/"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def within(self, other: S3Folder) -> bool:
        return self.bucket == other.bucket and self.prefix.startswith(other.prefix)


def parse_s3_folder(uri: str) -> S3Folder:
    """`s3://bucket/a/b/` (or without the last slash) as a folder. Its key segments may not be empty, `.` or
    `..`: a prefix means the same to every reader, S3 and the allow-list alike."""
    if not uri.startswith("s3://"):
        raise SourceError(f"'{uri}' is not an s3:// URI")
    bucket, _, path = uri.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket):
        raise SourceError(f"'{bucket}' in '{uri}' is not a valid bucket name")
    segments = path.removesuffix("/").split("/") if path.removesuffix("/") else []
    if any(s in ("", ".", "..") for s in segments):
        raise SourceError(f"'{uri}' has an empty, '.' or '..' path segment")
    return S3Folder(bucket, "".join(s + "/" for s in segments))


def allowed_folder(uri: str, allowed: list[str], own_bucket: str) -> S3Folder:
    """The folder `uri` names, if it lies under one of the `allowed` prefixes and outside `own_bucket`
    (which holds every tenant's files and adapters); SourceError otherwise."""
    folder = parse_s3_folder(uri)
    if folder.bucket == own_bucket:
        raise SourceError(f"'{uri}' is in the service's own bucket, which is never an import source")
    if not any(folder.within(parse_s3_folder(a)) for a in allowed):
        where = ", ".join(allowed) if allowed else "none (TUNESERVE_ADAPTER_IMPORT_SOURCES is empty)"
        raise SourceError(f"'{uri}' is not under a prefix the admin allows for imports: {where}")
    return folder
