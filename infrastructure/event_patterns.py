"""EventBridge event patterns, evaluated: the subset of exact values and `exists`.

The stack's patterns (the pipe's stream filter, the rule on the bus) use only this
subset, so the tests and the local twin can decide what EventBridge would without AWS.
A pattern that uses anything else (`prefix`, `anything-but`, `numeric`, ...) is refused
with `UnsupportedPattern` rather than evaluated wrongly.

The rules (as EventBridge applies them): every field a pattern names must match; a
nested object in the pattern matches the event's object at that key; a leaf is a list
of conditions, any of which may match; a condition is a value, equal to the event's
(or to any element of an event's array), or `{"exists": true}` (the field is present
and is not an object) or `{"exists": false}` (the field is absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OPERATORS = frozenset({"exists"})


class UnsupportedPattern(ValueError):
    """A pattern outside the evaluated subset, or not a valid pattern at all."""


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether `event` (a stream record, an event on a bus) matches `pattern`."""
    validate(pattern)
    return _object_matches(pattern, event)


def validate(pattern: Mapping[str, Any], path: str = "$") -> None:
    """Raises UnsupportedPattern unless `pattern` is within the evaluated subset."""
    if not isinstance(pattern, Mapping):
        raise UnsupportedPattern(f"{path}: a pattern is an object, not {type(pattern).__name__}")
    for key, expected in pattern.items():
        where = f"{path}.{key}"
        if isinstance(expected, Mapping):
            validate(expected, where)
        elif isinstance(expected, list):
            if not expected:
                raise UnsupportedPattern(f"{where}: an empty list matches nothing")
            for condition in expected:
                _validate_condition(condition, where)
        else:
            # EventBridge wants a list at every leaf: `"a": "b"` is not a pattern.
            raise UnsupportedPattern(f"{where}: a leaf is a list of conditions, not {expected!r}")


def _validate_condition(condition: Any, where: str) -> None:
    if isinstance(condition, Mapping):
        if len(condition) != 1:
            raise UnsupportedPattern(f"{where}: one operator per condition, not {dict(condition)!r}")
        ((operator, argument),) = condition.items()
        if operator not in OPERATORS:
            raise UnsupportedPattern(f"{where}: operator {operator!r} is not evaluated here")
        if not isinstance(argument, bool):
            raise UnsupportedPattern(f"{where}: exists takes true or false, not {argument!r}")
    elif isinstance(condition, list):
        raise UnsupportedPattern(f"{where}: a condition is a value or an operator, not a list")


def _object_matches(pattern: Mapping[str, Any], event: Any) -> bool:
    if isinstance(event, list):
        # An array of objects matches when one of its objects does.
        return any(_object_matches(pattern, element) for element in event)
    for key, expected in pattern.items():
        present = isinstance(event, Mapping) and key in event
        value = event[key] if present else None
        if isinstance(expected, Mapping):
            if not _object_matches(expected, value):
                return False
        elif not _leaf_matches(expected, present, value):
            return False
    return True


def _leaf_matches(conditions: Sequence[Any], present: bool, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for condition in conditions:
        if isinstance(condition, Mapping):
            wanted = condition["exists"]
            is_leaf = present and not isinstance(value, Mapping)
            if is_leaf if wanted else not present:
                return True
        elif present and any(_equal(condition, v) for v in values):
            return True
    return False


def _equal(expected: Any, actual: Any) -> bool:
    # JSON's true is not the number 1 (Python's bool is an int).
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return type(expected) is type(actual) and bool(expected == actual)
