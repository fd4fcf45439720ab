"""CCCD chip citizen-ID QR: plain UTF-8, 7 or more `|`-separated fields, no terminator."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Any

from agent.cards.fields import iso, parse_birth_date, parse_date, plain_text
from agent.cards.model import Problems

ID_12 = re.compile(r"^[0-9]{12}$")
OLD_ID = re.compile(r"^[0-9]{9}$")


def looks_like(tokens: list[str]) -> bool:
    """Loose test: a citizen-ID number first and a compact birth date where it belongs."""
    # the shape only (any digits): a CCCD with look-alike digits is an invalid CCCD, not "not a card"
    return (len(tokens) >= 5 and re.fullmatch(r"\d{9,13}", tokens[0].strip()) is not None
            and re.fullmatch(r"\d{6,9}", tokens[3].strip()) is not None)


def _sex(token: str) -> str | None:
    # Compare without diacritics and case: "Nữ", "NỮ", "Nu" (diacritics lost) all mean female.
    bare = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if not unicodedata.combining(c))
    return {"nam": "male", "nu": "female"}.get(bare.strip())


def parse(tokens: list[str], today: date) -> tuple[dict[str, Any], Problems]:
    p = Problems()
    fields = [t.strip() for t in tokens]
    if len(fields) < 7:
        p.error("field_count", f"a CCCD code has at least 7 fields, this one has {len(fields)}")
        return {"id_number": fields[0][:12]}, p
    card: dict[str, Any] = {"id_number": fields[0] if ID_12.match(fields[0]) else None}
    if card["id_number"] is None:
        p.error("bad_id_number", "citizen ID must be 12 digits")
    card["old_id_number"] = fields[1] if OLD_ID.match(fields[1]) else None
    if card["old_id_number"] is None and fields[1]:
        p.error("bad_old_id_number", "old ID must be 9 digits or empty")
    card["name"] = plain_text(fields[2], "name", p)
    card["birth_date"] = parse_birth_date(fields[3], p, today, compact=True)
    card["sex"] = _sex(fields[4])
    if card["sex"] is None:
        p.error("bad_sex", "sex must be Nam or Nữ")
    card["address"] = plain_text(fields[5], "address", p, optional=True)
    card["issued"] = iso(parse_date(fields[6], "issued", p, compact=True))
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
