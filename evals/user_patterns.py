"""Regular expressions that users send (the regex grader, JSON schemas' `pattern` and `patternProperties`)
run on RE2: time linear in the text, whatever the pattern. Python's `re` backtracks: `^(a+)+$` on 29 `a`s
and a `b` once stalled the whole API for seconds, and each further character doubled it. Patterns RE2
cannot run (backreferences, lookaround) are refused with the reason, when the grader or schema is made."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2


class PatternError(ValueError):
    """The pattern is not a regular expression RE2 runs; the message says why."""


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str):  # an re2 pattern
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(
            f"{pattern!r} is not a supported regular expression ({reason}); RE2 syntax, without "
            "backreferences or lookaround"
        ) from None


def search(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


def schema_patterns(schema: Any) -> Iterator[str]:
    """Every `pattern` and `patternProperties` key of a JSON schema, at any depth."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            if isinstance(node.get("patternProperties"), dict):
                yield from node["patternProperties"]
            stack += node.values()
        elif isinstance(node, list):
            stack += node


def check_schema(schema: dict) -> None:
    """jsonschema.SchemaError for an invalid schema, PatternError for a pattern RE2 cannot run."""
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    for pattern in schema_patterns(schema):
        compile_pattern(pattern)


def schema_validator(schema: dict):  # a jsonschema validator
    """A Draft 2020-12 validator whose pattern keywords match with RE2."""
    return _validator_class()(schema)


@lru_cache(maxsize=1)
def _validator_class():
    import jsonschema
    from jsonschema.exceptions import ValidationError

    def pattern(validator, patrn, instance, schema):
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")

    def pattern_properties(validator, patterns, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        for patrn, subschema in patterns.items():
            for key, value in instance.items():
                if search(patrn, key):
                    yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator, extra_schema, instance, schema):
        if not validator.is_type(instance, "object"):
            return
        named = schema.get("properties", {})
        patterns = list(schema.get("patternProperties", {}))
        extras = sorted(k for k in instance if k not in named and not any(search(p, k) for p in patterns))
        if validator.is_type(extra_schema, "object"):
            for key in extras:
                yield from validator.descend(instance[key], extra_schema, path=key)
        elif extra_schema is False and extras:
            yield ValidationError(f"Additional properties are not allowed ({', '.join(map(repr, extras))})")

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        {
            "pattern": pattern,
            "patternProperties": pattern_properties,
            "additionalProperties": additional_properties,
        },
    )
