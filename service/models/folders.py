"""Writing a model folder safely."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def model_folder(target: Path) -> Iterator[Path]:
    """A temporary sibling of `target` to write a model into, renamed to `target` once written: an
    interrupted build never leaves a half folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.chmod(0o755)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
