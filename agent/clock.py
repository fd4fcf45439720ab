"""Is the system clock synchronised (NTP)? Check-ins before sync carry clock_synced: false.

A Raspberry Pi has no RTC battery: after a power cut it boots with a stale clock until
systemd-timesyncd (or chrony) synchronises it. Never block scanning on this.

Timestamps in payloads use the configured time zone ([station] timezone, default
Asia/Ho_Chi_Minh), never the system's: Pi images often default to UTC, and a station must not
change offset when IT fixes the system zone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from datetime import date, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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


DEFAULT_ZONE = "Asia/Ho_Chi_Minh"
_zone: tzinfo = ZoneInfo(DEFAULT_ZONE)


def zone(name: str) -> tzinfo:
    """The IANA zone `name`; ValueError with a clear message when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as {DEFAULT_ZONE!r})") from exc


def use_zone(name: str) -> None:
    """Set the zone of every payload timestamp (the station calls this once at start)."""
    global _zone
    _zone = zone(name)


def _moment(at: float | None, tz: tzinfo | None = None) -> datetime:
    """`at` (default now: time.time(), which a test may set) in the configured zone (or `tz`)."""
    return datetime.fromtimestamp(time.time() if at is None else at, tz or _zone)


def now_iso(at: float | None = None) -> str:
    """`at` (default now), ISO 8601 in the configured zone with its offset (what every payload's
    timestamp uses)."""
    return _moment(at).isoformat(timespec="milliseconds")


def today(at: float | None = None, tz: tzinfo | None = None) -> date:
    """The station's date now (or at `at`): the day in the configured zone (or `tz`), never the
    system's. The one "today" every day is compared with: card validity, ages, `repeat_today`
    (a Pi left in UTC is a day behind Vietnam from 00:00 to 07:00)."""
    return _moment(at, tz).date()


def day_start(at: float | None = None) -> float:
    """The epoch time of the last midnight (before `at`, default now) in the configured zone."""
    moment = _moment(at)
    midnight = datetime.combine(moment.date(), datetime.min.time(), tzinfo=_zone)
    return midnight.timestamp()


def system_zone_name() -> str:
    """The system's zone as people name it (TZ, else /etc/localtime's target), for messages."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = os.readlink("/etc/localtime")
            name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
        except OSError:
            name = ""
    return name or "/".join(n for n in dict.fromkeys(time.tzname) if n) or "unknown"


def system_zone_differs(tz: tzinfo, at: float | None = None, days: int = 366) -> bool:
    """Does the system's local time differ from `tz` now or on any day of the coming year (a
    summer-time rule of one of them included)? Only then can their dates differ."""
    start = time.time() if at is None else at
    for day in range(days + 1):
        t = start + day * 86400
        if time.localtime(t).tm_gmtoff != datetime.fromtimestamp(t, tz).utcoffset().total_seconds():
            return True
    return False
