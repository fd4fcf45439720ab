"""Wait for a condition, not for a time: a test that sleeps a fixed while and then looks fails
when the machine is slow (CI's parallel workers, arm64 emulation)."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    """Whether `predicate()` became true within `timeout` seconds (polled every 50 ms)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
