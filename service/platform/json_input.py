"""Parsing JSON that users sent: every failure is a `JsonInputError` with a short reason, never a crash.

`json.loads` raises `RecursionError` (not `JSONDecodeError`) on input nested deeper than the interpreter's
recursion limit (`[[[[...` a hundred thousand deep), which would surface as a 500."""

from __future__ import annotations

import json
from typing import Any


class JsonInputError(ValueError):
    """The text is not JSON this service accepts; `str()` says why, briefly."""


def parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise JsonInputError("invalid JSON (nested too deeply)") from None
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"invalid JSON (not UTF-8: {exc.reason})") from None
