"""The EventBridge pattern evaluator (`infrastructure.event_patterns`): exact values and
`exists`, as EventBridge matches them, and a refusal of everything else."""

from __future__ import annotations

from typing import Any

import pytest

from infrastructure.event_patterns import UnsupportedPattern, matches, validate

pytestmark = pytest.mark.infrastructure


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"source": ["a"]}, {"source": "a"}, True),
        ({"source": ["a", "b"]}, {"source": "b"}, True),
        ({"source": ["a"]}, {"source": "A"}, False),  # case matters
        ({"source": ["a"]}, {}, False),
        # An event's array matches when one of its values does.
        ({"tags": ["x"]}, {"tags": ["w", "x"]}, True),
        ({"tags": ["x"]}, {"tags": ["w"]}, False),
        # Every field the pattern names must match.
        ({"a": ["1"], "b": ["2"]}, {"a": "1", "b": "2"}, True),
        ({"a": ["1"], "b": ["2"]}, {"a": "1", "b": "3"}, False),
        # Nested objects.
        ({"d": {"e": ["f"]}}, {"d": {"e": "f", "g": "h"}}, True),
        ({"d": {"e": ["f"]}}, {"d": {"e": "g"}}, False),
        ({"d": {"e": ["f"]}}, {"d": "e"}, False),
        ({"d": {"e": ["f"]}}, {"d": [{"e": "g"}, {"e": "f"}]}, True),
        # Numbers compare as numbers; true is not 1; null matches null only.
        ({"n": [300]}, {"n": 300.0}, True),
        ({"n": [1]}, {"n": True}, False),
        ({"b": [True]}, {"b": True}, True),
        ({"b": [True]}, {"b": "true"}, False),
        ({"z": [None]}, {"z": None}, True),
        ({"z": [None]}, {}, False),
        ({"s": ["1"]}, {"s": 1}, False),
    ],
)
def test_exact_values(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, event) is expected


@pytest.mark.parametrize(
    ("pattern", "event", "expected"),
    [
        ({"a": [{"exists": True}]}, {"a": "x"}, True),
        ({"a": [{"exists": True}]}, {"a": ""}, True),
        ({"a": [{"exists": True}]}, {"a": None}, True),
        ({"a": [{"exists": True}]}, {"b": "x"}, False),
        # Only a leaf exists: an object under the key does not.
        ({"a": [{"exists": True}]}, {"a": {"b": "x"}}, False),
        ({"a": [{"exists": False}]}, {"b": "x"}, True),
        ({"a": [{"exists": False}]}, {"a": "x"}, False),
        # A missing parent: the leaf does not exist either.
        ({"p": {"a": [{"exists": True}]}}, {}, False),
        ({"p": {"a": [{"exists": False}]}}, {}, True),
        # Conditions of one leaf are alternatives.
        ({"a": ["x", {"exists": False}]}, {}, True),
        ({"a": ["x", {"exists": False}]}, {"a": "y"}, False),
    ],
)
def test_exists(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, event) is expected


def test_a_dynamodb_attribute_value_is_matched_by_its_type_key() -> None:
    pattern = {"dynamodb": {"NewImage": {"attr": {"S": [{"exists": True}]}}}}
    assert matches(pattern, {"dynamodb": {"NewImage": {"attr": {"S": "text"}}}})
    assert not matches(pattern, {"dynamodb": {"NewImage": {"attr": {"N": "1"}}}})
    assert not matches(pattern, {"dynamodb": {"NewImage": {}}})
    assert not matches(pattern, {"dynamodb": {"OldImage": {"attr": {"S": "text"}}}})


@pytest.mark.parametrize(
    "pattern",
    [
        {"a": "x"},  # a leaf is a list
        {"a": []},
        {"a": [{"prefix": "x"}]},
        {"a": [{"anything-but": ["x"]}]},
        {"a": [{"numeric": [">", 0]}]},
        {"a": [{"exists": "yes"}]},
        {"a": [{"exists": True, "prefix": "x"}]},
        {"a": [["x"]]},
        {"a": {"b": [{"wildcard": "*"}]}},
    ],
)
def test_anything_outside_the_subset_is_refused(pattern: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPattern):
        validate(pattern)
    with pytest.raises(UnsupportedPattern):
        matches(pattern, {"a": "x"})
