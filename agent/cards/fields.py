"""Field readers shared by the card formats: dates and hex-encoded UTF-8 text."""

from __future__ import annotations

import re
from datetime import date

from agent.cards.model import Problems
from agent.cards.sanitize import cap, clean_text

NULL = "-"

_DMY = re.compile(r"^([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})$")
_MY = re.compile(r"^([0-9]{1,2})/([0-9]{4})$")
_Y = re.compile(r"^([0-9]{4})$")
_DMY_COMPACT = re.compile(r"^([0-9]{2})([0-9]{2})([0-9]{4})$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")

MIN_YEAR = 1900


def _real_date(y: int, m: int, d: int) -> date | None:
    if y < MIN_YEAR or y > 2200:
        return None
    try:
        return date(y, m, d)
    except ValueError:
        return None


def parse_date(token: str, name: str, problems: Problems, *, optional: bool = False,
               compact: bool = False) -> date | None:
    """Read `dd/mm/yyyy` (or `ddmmyyyy` when compact). `-` or empty is None when optional."""
    token = token.strip()
    if optional and token in ("", NULL):
        return None
    m = (_DMY_COMPACT if compact else _DMY).match(token)
    day = _real_date(int(m.group(3)), int(m.group(2)), int(m.group(1))) if m else None
    if day is None:
        problems.error(f"bad_{name}", f"{name.replace('_', ' ')} is not a valid date: {token[:20]!r}")
    return day


def parse_birth_date(token: str, problems: Problems, today: date, *, compact: bool = False) -> str | None:
    """Birth date as ISO text: `YYYY-MM-DD`, or `YYYY-MM` / `YYYY` when only that is known."""
    token = token.strip()
    text: str | None = None
    first: date | None = None  # earliest day the birth date can mean, for the future check
    if m := (_DMY_COMPACT if compact else _DMY).match(token):
        first = _real_date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        text = first.isoformat() if first else None
    elif not compact and (m := _MY.match(token)):
        first = _real_date(int(m.group(2)), int(m.group(1)), 1)
        text = f"{first.year:04d}-{first.month:02d}" if first else None
    elif not compact and (m := _Y.match(token)):
        first = _real_date(int(m.group(1)), 1, 1)
        text = m.group(1) if first else None
    if text is None:
        # the token itself is personal data: say what was expected, never echo it
        problems.error("bad_birth_date", "birth date is not a valid date (expected dd/mm/yyyy, mm/yyyy "
                       "or yyyy, ASCII digits)")
        return None
    if first and first > today:
        problems.error("bad_birth_date", "birth date is in the future")
        return None
    return text


def parse_hex_text(token: str, name: str, problems: Problems, *, optional: bool = False) -> str | None:
    """Decode a field of hex-encoded UTF-8 (any case) and clean it. `-` is None when optional."""
    token = token.strip()
    if optional and token in ("", NULL):
        return None
    if not token or not _HEX.match(token):
        problems.error(f"bad_{name}", f"{name} is not hex-encoded text")
        return None
    try:
        text = bytes.fromhex(token).decode("utf-8")
    except UnicodeDecodeError:
        problems.error(f"bad_{name}", f"{name} is not valid UTF-8 once decoded from hex")
        return None
    return plain_text(text, name, problems, optional=optional)


def plain_text(token: str, name: str, problems: Problems, *, optional: bool = False) -> str | None:
    """Clean and cap a free-text field; an empty required field is an error."""
    text, truncated = cap(clean_text(token))
    if truncated:
        problems.error(f"{name}_too_long", f"{name} is longer than {len(text)} characters")
    if not text or (optional and text == NULL):
        if not optional:
            problems.error(f"missing_{name}", f"{name} is empty")
        return None
    return text


def iso(day: date | None) -> str | None:
    return day.isoformat() if day else None
