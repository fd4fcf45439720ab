"""Is the system clock synchronised (NTP)? Check-ins before sync carry clock_synced: false.

A Raspberry Pi has no RTC battery: after a power cut it boots with a stale clock until
systemd-timesyncd (or chrony) synchronises it. Never block scanning on this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from datetime import datetime, timezone
from pathlib import Path

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex() return value when the kernel clock is unsynchronised


def _adjtimex_synced() -> bool | None:
    """The kernel's own view (any NTP daemon sets it); None where adjtimex is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes = 0 reads only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != _TIME_ERROR


def clock_synced() -> bool:
    if TIMESYNCD_FLAG.exists():
        return True
    return bool(_adjtimex_synced())


def now_iso() -> str:
    """Current time, ISO 8601 with the UTC offset (what every payload's timestamp uses)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")
