"""CCCD chip citizen-ID QR: plain UTF-8, 7 or more `|`-separated fields, no terminator."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any

from agent.cards.fields import _real_date, plain_text
from agent.cards.model import Problems

ID_12 = re.compile(r"^[0-9]{12}$")
OLD_ID = re.compile(r"^[0-9]{9}$")
#: the most digits an old-ID field is kept with (checkin.json: old_id_number maxLength)
OLD_ID_MAX = 12
# the shape only (any digits): a CCCD with look-alike digits is an invalid CCCD, not "not a card"
_ID_SHAPE = re.compile(r"^\d{9,13}$")
_DATE_SHAPE = re.compile(r"^(\d{4}|\d{6}|\d{8}|\d{1,2}/\d{1,2}/\d{4}|\d{1,2}/\d{4})$")
_COMPACT = re.compile(r"^([0-9]{2})?([0-9]{2})?([0-9]{4})$")
_SLASHED = re.compile(r"^(?:([0-9]{1,2})/)?(?:([0-9]{1,2})/)?([0-9]{4})$")


def _sex_word(token: str) -> bool:
    return _sex(token) is not None


def _layout(tokens: list[str]) -> str | None:
    """Which CCCD layout these fields are: "standard" (id, old id, name, birth, sex, address,
    issued, ...), "no_old_id" (the old-ID field left out) or "no_issue_date" (6 fields ending at
    the address); None when no layout fits."""
    t = [x.strip() for x in tokens]
    if len(t) < 6 or not _ID_SHAPE.match(t[0]):
        return None
    if _DATE_SHAPE.match(t[2]) and _sex_word(t[3]) and not _DATE_SHAPE.match(t[3]):
        return "no_old_id"
    if _DATE_SHAPE.match(t[3]) or re.fullmatch(r"\d{6,9}", t[3]):
        return "standard" if len(t) >= 7 else "no_issue_date"
    return None


def looks_like(tokens: list[str]) -> bool:
    """Loose test: a citizen-ID number first and a birth date (and sex) where a layout puts them;
    or the standard shape with a broken field, so that it reads as an invalid CCCD."""
    t = [x.strip() for x in tokens]
    if _layout(tokens) is not None:
        return True
    if len(t) < 5 or not _ID_SHAPE.match(t[0]):
        return False
    # the standard shape with one broken field: still a CCCD, read as invalid with a reason
    return re.fullmatch(r"\d{6,9}", t[3]) is not None or (len(t) >= 6 and (_sex_word(t[4]) or _sex_word(t[3])))


def _date(token: str, name: str, p: Problems, today: date, *, birth: bool) -> str | None:
    """A CCCD date: `ddmmyyyy` as the reference says, or `dd/mm/yyyy` as some apps write it; a
    birth date may also be `mmyyyy` or `yyyy` (only that is printed on some cards)."""
    m = _COMPACT.match(token) or _SLASHED.match(token)
    if m and "/" in token:
        p.warn("slashed_dates", f"{name.replace('_', ' ')} written dd/mm/yyyy instead of ddmmyyyy")
    first, text = None, None
    if m:
        d, mo, y = m.group(1), m.group(2), int(m.group(3))
        if d and not mo:                        # "mmyyyy" / "mm/yyyy": the first group is the month
            d, mo = None, d
        first = _real_date(y, int(mo or 1), int(d or 1))
        if first:
            text = first.isoformat() if d else (f"{y:04d}-{int(mo):02d}" if mo else f"{y:04d}")
        if text and not d and not birth:
            text, first = None, None           # an issue date is always a whole date
        if text and not d:
            p.warn("partial_birth_date", "only the " + ("month and year" if mo else "year") + " of birth is given")
    if text is None:
        p.error(f"bad_{name}", f"{name.replace('_', ' ')} is not a valid date (expected ddmmyyyy"
                + (", mmyyyy or yyyy)" if birth else ")"))
        return None
    if birth and first and first > today:
        p.error("bad_birth_date", "birth date is in the future")
        return None
    return text


def _sex(token: str) -> str | None:
    # Compare without diacritics and case: "Nữ", "NỮ", "Nu" (diacritics lost) all mean female.
    bare = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if not unicodedata.combining(c))
    return {"nam": "male", "nu": "female"}.get(bare.strip())


def parse(tokens: list[str], today: date) -> tuple[dict[str, Any], Problems]:
    p = Problems()
    fields = [t.strip() for t in tokens]
    layout = _layout(fields)
    if layout is None:
        p.error("field_count", "a CCCD code has the citizen ID, old ID, name, birth date (ddmmyyyy), sex (Nam/Nữ), "
                f"address and issue date; this one has {len(fields)} fields that do not fit")
        return {"id_number": fields[0][:12]}, p
    if layout == "no_old_id":
        p.warn("no_old_id_field", "the old-ID field is left out (6-field layout)")
        fields = fields[:1] + [""] + fields[1:]
    if layout == "no_issue_date":
        p.warn("no_issue_date", "the issue date is left out (6 fields ending at the address)")
        fields = fields + [""]
    card: dict[str, Any] = {"id_number": fields[0] if ID_12.match(fields[0]) else None}
    if card["id_number"] is None:
        p.error("bad_id_number", "citizen ID must be 12 ASCII digits")
    old = fields[1]
    # kept when digits, at most OLD_ID_MAX of them (the check-in schema's bound: a 9-digit CMND,
    # or a 12-digit ID number repeated there), else left out with the warning
    card["old_id_number"] = old if old.isascii() and old.isdigit() and len(old) <= OLD_ID_MAX else None
    if old and not OLD_ID.match(old):   # nothing at the counter depends on it: a warning, kept if digits
        p.warn("unusual_old_id_number", f"old ID has {len(old)} characters (9 digits expected)")
    card["name"] = plain_text(fields[2], "name", p)
    card["birth_date"] = _date(fields[3], "birth_date", p, today, birth=True)
    card["sex"] = _sex(fields[4])
    if card["sex"] is None:
        p.error("bad_sex", "sex must be Nam or Nữ")
    card["address"] = plain_text(fields[5], "address", p, optional=True)
    card["issued"] = _date(fields[6], "issued", p, today, birth=False) if fields[6] else None
    card["extra"] = [plain_text(f, "extra", p, optional=True) for f in fields[7:16]]
    if len(fields) > 16:
        p.warn("extra_fields_dropped", f"only the first 9 extra fields are kept of {len(fields) - 7}")

    # The ID encodes century+sex (4th digit) and birth year (5th-6th): a mismatch is worth a look.
    number, birth, sex = card["id_number"], card["birth_date"], card["sex"]
    if number and birth and sex:
        century_sex = int(number[3])
        century = 1900 + 100 * (century_sex // 2)
        expected_sex = "male" if century_sex % 2 == 0 else "female"
        if int(birth[:4]) - century != int(number[4:6]) or sex != expected_sex:
            p.warn("id_mismatch", "the ID number does not match the birth year or sex on the code")
    return card, p
