"""OpenAI's vector store attribute filters, evaluated against a chunk's file attributes. Pure.

A comparison is `{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key": ..., "value": ...}`; a
compound is `{"type": "and"|"or", "filters": [...]}`. A missing key never matches a comparison (except
`ne` and `nin`, which it satisfies), and values of different kinds (a number against a string) do not compare.
"""

from __future__ import annotations

COMPARISONS = {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"}
COMPOUNDS = {"and", "or"}


class FilterError(ValueError):
    """The filter is malformed; the message says where."""


def validate(f: object, path: str = "filters") -> None:
    """Raise FilterError naming the first malformed part of `f`."""
    if not isinstance(f, dict) or "type" not in f:
        raise FilterError(f"{path}: a filter is an object with a 'type'")
    kind = f["type"]
    if kind in COMPOUNDS:
        subs = f.get("filters")
        if not isinstance(subs, list) or not subs:
            raise FilterError(f"{path}: '{kind}' needs a non-empty 'filters' list")
        for i, sub in enumerate(subs):
            validate(sub, f"{path}.filters[{i}]")
    elif kind in COMPARISONS:
        if not isinstance(f.get("key"), str) or not f["key"]:
            raise FilterError(f"{path}: '{kind}' needs a 'key'")
        if "value" not in f:
            raise FilterError(f"{path}: '{kind}' needs a 'value'")
        value = f["value"]
        if kind in ("in", "nin"):
            if not isinstance(value, list) or not all(_scalar(v) for v in value):
                raise FilterError(f"{path}: '{kind}' needs a list of strings, numbers or booleans")
        elif not _scalar(value):
            raise FilterError(f"{path}: 'value' must be a string, number or boolean")
    else:
        known = ", ".join(sorted(COMPARISONS | COMPOUNDS))
        raise FilterError(f"{path}: unknown filter type {kind!r} (known: {known})")


def matches(f: dict, attributes: dict) -> bool:
    """Whether `attributes` satisfy the (validated) filter `f`."""
    kind = f["type"]
    if kind == "and":
        return all(matches(sub, attributes) for sub in f["filters"])
    if kind == "or":
        return any(matches(sub, attributes) for sub in f["filters"])
    key, value = f["key"], f["value"]
    if key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[key]
    if kind == "in":
        return any(_same(actual, v) for v in value)
    if kind == "nin":
        return not any(_same(actual, v) for v in value)
    if kind == "eq":
        return _same(actual, value)
    if kind == "ne":
        return not _same(actual, value)
    if not _comparable(actual, value):
        return False
    return {
        "gt": actual > value,
        "gte": actual >= value,
        "lt": actual < value,
        "lte": actual <= value,
    }[kind]


def _scalar(v: object) -> bool:
    return isinstance(v, str | int | float | bool)


def _kind(v: object) -> str:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else "str"


def _same(a: object, b: object) -> bool:
    return _kind(a) == _kind(b) and a == b


def _comparable(a: object, b: object) -> bool:
    return _kind(a) == _kind(b) != "bool"
