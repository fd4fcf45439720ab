"""JSON from outside with its size and nesting bounded before it is parsed: Python's parser
recurses, and a retained message of 16,000 `[` ends in a RecursionError, in whatever thread parses
it (paho's network thread, say). Everything here raises ValueError, like json.loads."""

from __future__ import annotations

import json
from typing import Any


def nesting_depth(text: str, limit: int) -> int:
    """How deep arrays and objects nest in a JSON text, counted without parsing (stops past `limit`)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(payload: bytes | str, *, max_bytes: int, max_depth: int = 16) -> Any:
    """json.loads, refusing (ValueError) a payload over `max_bytes` or nested over `max_depth`."""
    if len(payload) > max_bytes:
        raise ValueError(f"{len(payload)} bytes, more than {max_bytes}")
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    if nesting_depth(text, max_depth) > max_depth:
        raise ValueError(f"arrays or objects nested more than {max_depth} deep")
    return json.loads(text)
