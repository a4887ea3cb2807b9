"""Secrets the stack generates into its data dir (admin key, embedded S3 credentials)."""

from __future__ import annotations

import os
from pathlib import Path


def write_secret(path: Path, text: str) -> None:
    """Create `path` readable by its owner only; refuses to overwrite an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def replace_secret(path: Path, text: str) -> None:
    """Write `path` readable by its owner only, replacing it whole (readers never see half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    write_secret(partial, text)
    os.replace(partial, path)
