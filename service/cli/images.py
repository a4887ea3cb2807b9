"""Local pictures as the API takes them: a file as a data URL, and a training file whose image parts name
local files turned into one whose parts carry data URLs.

OpenAI's vision fine-tuning format takes a data URL, an https URL or an uploaded file's id in an
`image_url` part, while a dataset on disk usually names its pictures by path. `tuneserve files upload`
and `tuneserve finetune` send such a file with its pictures inline; the service then checks each one
(format, size, count) and names the line of a bad one, as for any upload.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterator
from pathlib import Path

from service.cli.client import CliError
from service.platform.images import FILE_ID_PREFIX, encode_data_url

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # data:, https:, ... : not a local path


def data_url(path: Path) -> str:
    """The file's bytes as a data URL, its type guessed from its name (the service checks the bytes)."""
    return encode_data_url(path.read_bytes(), mimetypes.guess_type(path.name)[0] or "image/png")


def _image_parts(node) -> Iterator[dict]:
    """Every `{"type": "image_url", "image_url": {...}}` part anywhere in a parsed example."""
    if isinstance(node, dict):
        if node.get("type") == "image_url" and isinstance(node.get("image_url"), dict):
            yield node
        for value in node.values():
            yield from _image_parts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _image_parts(value)


def inline_local_images(path: Path) -> tuple[bytes, int] | None:
    """The JSONL file at `path` with every image part whose url is a local file (relative to the file's
    folder, or absolute) carrying that file as a data URL instead, and how many it changed; None when it
    names no local file. Lines that are not JSON, and urls with a scheme or of uploaded files
    (`file-...`), stay as they are. CliError naming the line for a path that is not a file."""
    lines, count = [], 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                example = json.loads(raw)
            except ValueError:  # the service names the line
                lines.append(raw)
                continue
            changed = 0
            for part in _image_parts(example):
                url = part["image_url"].get("url")
                if not isinstance(url, str) or _SCHEME.match(url):
                    continue
                local = path.parent / url
                if not local.is_file():
                    if url.startswith(FILE_ID_PREFIX):  # an uploaded picture's id
                        continue
                    raise CliError(f"{path}, line {number}: image {url!r} is not a file (in {path.parent})")
                part["image_url"]["url"] = data_url(local)
                changed += 1
            lines.append(json.dumps(example).encode() + b"\n" if changed else raw)
            count += changed
    return (b"".join(lines), count) if count else None
