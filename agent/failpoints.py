"""Failpoints: a test seam to make a named place in a running daemon raise, a given number of times.

    SCANNER_AGENT_FAILPOINTS="mqtt.pump=3"   # the MQTT sender's pump raises the first 3 times

The reliability tests use it to crash a worker inside the real daemon and check that it is
supervised (fault shown, restarted, nothing lost). Unset, `hit` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

ENV = "SCANNER_AGENT_FAILPOINTS"


class Failpoint(RuntimeError):
    """Raised at an armed failpoint."""


def _parse(text: str) -> dict[str, int]:
    armed = {}
    for item in text.split(","):
        name, _, count = item.strip().partition("=")
        if name:
            armed[name] = int(count) if count.strip().isdigit() else 1
    return armed


_armed = _parse(os.environ.get(ENV, ""))
_actions: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()


def arm(name: str, times: int = 1, action: Callable[[], None] | None = None) -> None:
    """In-process tests: raise at `name` the next `times` times, or call `action` instead (to hang)."""
    with _lock:
        _armed[name] = times
        if action is not None:
            _actions[name] = action
        else:
            _actions.pop(name, None)


def hit(name: str) -> None:
    """Raise Failpoint if `name` is armed (and count one use down)."""
    if not _armed:
        return
    with _lock:
        left = _armed.get(name, 0)
        if left <= 0:
            return
        _armed[name] = left - 1
        action = _actions.get(name)
    if action is not None:
        action()
        return
    raise Failpoint(f"failpoint {name} (test seam)")
