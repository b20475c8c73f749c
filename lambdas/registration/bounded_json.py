"""JSON from callers, parsed within bounds before any model sees it.

Python's parser recurses once per nesting level (a thousand levels raise RecursionError)
and refuses integers of more than 4,300 digits with a ValueError of its own; neither is
a decode error, so neither would reach the caller as one. `loads` refuses, as a
`json.JSONDecodeError` (what every caller already answers as malformed JSON), a document
nested deeper than MAX_DEPTH or holding an integer of more than MAX_INTEGER_DIGITS digits.
No field of this API needs either: its documents are flat objects of short values.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 20
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
TOO_LONG = f"an integer of more than {MAX_INTEGER_DIGITS} digits"


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _Refused(TOO_LONG)
    return int(text)


def depth(document: Any) -> int:
    """How deeply arrays and objects nest in `document` (0 for a scalar); iterative."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        pending.extend((child, level) for child in children)
    return deepest


def loads(text: str | bytes | bytearray) -> Any:
    """`json.loads` within the bounds above; anything else raises `json.JSONDecodeError`."""
    document_text = text if isinstance(text, str) else bytes(text).decode("utf-8")
    try:
        document = json.loads(document_text, parse_int=_integer)
    except _Refused as refused:
        raise json.JSONDecodeError(refused.reason, document_text, 0) from None
    except RecursionError:
        raise json.JSONDecodeError(TOO_DEEP, document_text, 0) from None
    if depth(document) > MAX_DEPTH:
        raise json.JSONDecodeError(TOO_DEEP, document_text, 0)
    return document
