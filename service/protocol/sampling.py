"""OpenAI's sampling parameters, checked where they are stored for later rather than sent at once: an eval
run's `sampling_params` and a model grader's. The ranges are the engine's own (vLLM's
`SamplingParams._verify_args`, which are OpenAI's), so what passes here is what a chat request of the
same fields would be answered with, not a 400 for every item of a run. Pure: no I/O, nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any

from service.protocol.tool_format import ToolFormatError, check_tools

RANGES = {  # name: (low, high, whether low itself is allowed)
    "temperature": (0.0, 2.0, True),
    "top_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, True),
    "frequency_penalty": (-2.0, 2.0, True),
}
TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_CHOICES = ("none", "auto", "required")
SEED_RANGE = (-(2**63), 2**64 - 1)  # vLLM's: a signed or unsigned 64-bit integer


class SamplingError(ValueError):
    """A sampling parameter is out of range or of the wrong type; `param` names it (`where.field`)."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


def _error(param: str, text: str) -> SamplingError:
    return SamplingError(param, f"{param} {text}")


def check_sampling(params: dict[str, Any], where: str) -> None:
    """Raise SamplingError for the first parameter of `params` that the engine would refuse; fields this
    module does not know are left to the caller (each caller has its own list of allowed fields)."""
    for name, (low, high, closed) in RANGES.items():
        if params.get(name) is not None:
            value = _number(params[name], f"{where}.{name}")
            if not (low <= value if closed else low < value) or value > high:
                bounds = f"{'[' if closed else '('}{low:g}, {high:g}]"
                raise _error(f"{where}.{name}", f"must be in {bounds}, got {value:g}")
    for name in TOKEN_LIMITS:
        value = params.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise _error(f"{where}.{name}", f"must be an integer of at least 1, got {value!r}")
    seed = params.get("seed")
    if seed is not None and (not _is_int(seed) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise _error(f"{where}.seed", f"must be a 64-bit integer, got {seed!r}")
    _check_stop(params.get("stop"), f"{where}.stop")
    _check_response_format(params.get("response_format"), f"{where}.response_format")
    parallel = params.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _error(f"{where}.parallel_tool_calls", f"must be true or false, got {parallel!r}")
    _check_tools(params.get("tools"), params.get("tool_choice"), where)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _error(param, f"must be a finite number, got {value!r}")
    return float(value)


def _check_stop(stop: Any, param: str) -> None:
    if stop is None:
        return
    strings = [stop] if isinstance(stop, str) else stop
    if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
        raise _error(param, f"must be a string or a list of strings, got {stop!r}")
    if "" in strings:
        raise _error(param, "cannot contain an empty string")


def _check_response_format(value: Any, param: str) -> None:
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind not in RESPONSE_FORMATS:
        raise _error(param, f'must be {{"type": ...}} with the type one of {", ".join(RESPONSE_FORMATS)}')
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _error(f"{param}.json_schema", 'must be an object with a "name" and a "schema"')
        if not isinstance(spec.get("schema", {}), dict):
            raise _error(f"{param}.json_schema.schema", "must be a JSON schema object")


def _check_tools(tools: Any, choice: Any, where: str) -> None:
    names: set[str] = set()
    if tools is not None:
        try:
            names = {tool["function"]["name"] for tool in check_tools(tools, f"{where}.tools")}
        except ToolFormatError as exc:
            raise SamplingError(f"{where}.tools", str(exc)) from None
    if choice is None or choice in TOOL_CHOICES[:2]:
        return
    param = f"{where}.tool_choice"
    if choice == "required" or isinstance(choice, dict):
        if not names:
            raise _error(param, f"{choice!r} needs tools")
        if choice == "required":
            return
        fn = choice.get("function")
        name = fn.get("name") if choice.get("type") == "function" and isinstance(fn, dict) else None
        if name in names:
            return
        if name is not None:
            raise _error(param, f"names {name!r}, which is not one of the tools")
    raise _error(
        param, 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
    )
