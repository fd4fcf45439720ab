"""The machine's time zone and clock, set for one test: a Pi left in UTC, at a chosen instant."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import datetime


def instant(text: str) -> float:
    """Epoch seconds of an ISO 8601 instant with its offset (`2026-12-05T18:30+00:00`)."""
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, "an instant needs its offset"
    return moment.timestamp()


@contextlib.contextmanager
def system_zone(name: str) -> Iterator[None]:
    """This process's local zone (TZ and tzset, what date.today() and time.localtime() follow)
    is `name` inside the block, and what it was after it."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
