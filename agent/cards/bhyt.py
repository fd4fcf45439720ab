"""BHYT health-insurance card QR (paper card and VssID), both generations.

Format reference: shared/reference/card-payloads.md, section 1. Fields are `|`-separated,
name and address are hex of UTF-8, the last token is a terminator (`$`, `#`, or missing).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from agent.cards.fields import NULL, iso, parse_birth_date, parse_date, parse_hex_text, plain_text
from agent.cards.model import Problems
from agent.cards.sanitize import clean_text

CARD_15 = re.compile(r"^[A-Z]{2}[1-5][0-9]{2}[0-9A-Z]{10}$")
CARD_10 = re.compile(r"^[0-9]{10}$")
FACILITY = re.compile(r"^([0-9]{2})\s*[-\u2010-\u2015\u2212]?\s*([0-9]{3})$")
MANAGEMENT = re.compile(r"^[0-9]{14}$")
TERMINATORS = ("$", "#")

#: Group codes by benefit level (reference table). Regulations change: unknown is only a warning.
GROUPS_BY_LEVEL = {
    1: "CC TE",
    2: "CK CB KC HN DT DK XD BT TS",
    3: "HT TC CN",
    4: "DN HX CH NN TK HC XK TB NO CT XB TN CS XN MS HD TQ TA TY HG LS PV HS SV GB GD",
    5: "QN CA CY",
}
LEVEL_OF_GROUP = {g: lvl for lvl, groups in GROUPS_BY_LEVEL.items() for g in groups.split()}

_HEXISH = re.compile(r"^[0-9a-fA-F]{4,}$")
_DATEISH = re.compile(r"^([0-9]{1,2}/)?([0-9]{1,2}/)?[0-9]{4}$")


def looks_like(tokens: list[str]) -> bool:
    """Loose test: is this meant to be a BHYT payload (so that a broken one is `invalid`, not `other`)?"""
    if len(tokens) < 8:
        return False
    head = tokens[0].strip()
    if not re.fullmatch(r"[0-9A-Za-z]{8,20}", head):
        return False
    return bool(_HEXISH.match(tokens[1].strip()) or _DATEISH.match(tokens[2].strip()))


def split_fields(tokens: list[str]) -> tuple[list[str], str | None]:
    """Strip the terminator. Returns (data fields, terminator or None when it was missing)."""
    last = tokens[-1].strip()
    if last in TERMINATORS:
        return tokens[:-1], last
    if last == "":  # string ended in `|`: terminator missing
        return tokens[:-1], None
    return tokens, None


_HEX_ONLY = re.compile(r"^[0-9a-fA-F\s]*$")
_BROKEN_HEX = re.compile(r"^[0-9A-Za-z]*[0-9][0-9A-Za-z]*$")   # one ASCII word with digits in it


def _text_field(token: str, name: str, p: Problems, *, optional: bool = False) -> str | None:
    """Name and address are hex of UTF-8; some issuers write the text itself. Text (letters,
    spaces, Vietnamese marks) is taken as it is, with a warning; what looks like hex gone wrong
    (hex digits and spaces, or one word mixing digits and letters) stays an error."""
    token = token.strip()
    if token in ("", NULL) or _HEX_ONLY.match(token) or _BROKEN_HEX.match(token):
        return parse_hex_text(token, name, p, optional=optional)
    p.warn("plain_text_fields", f"{name} written as text, not hex")
    return plain_text(token, name, p, optional=optional)


def parse(tokens: list[str], today: date) -> tuple[dict[str, Any], Problems]:
    p = Problems()
    fields, terminator = split_fields([t.strip() for t in tokens])
    if len(fields) not in (14, 16):
        p.error("field_count", f"a BHYT card has 14 or 16 fields, this code has {len(fields)}")
        return {"card_number": clean_text(fields[0])[:20]}, p

    number = fields[0]
    if number != number.upper() and CARD_15.match(number.upper()):
        # some phone apps and re-printed cards give the group letters in lower case; HIS readers upper-case it
        p.warn("lowercase_card_number", "card number in lower case, read as upper case")
        number = number.upper()
    card: dict[str, Any] = {"card_number": number}
    if CARD_15.match(number):
        generation = "15"
        group, level = number[:2], int(number[2])
        tail = number[5:]
        card.update(generation="15", group_code=group, benefit_level=level,
                    province_code=number[3:5], bhxh_number=tail if tail.isascii() and tail.isdigit() else None)
    elif CARD_10.match(number):
        generation = "10"
        group, level = None, None
        card.update(generation="10", group_code=None, benefit_level=None,
                    province_code=None, bhxh_number=number)
    else:
        p.error("bad_card_number", "card number is neither 15 characters (e.g. DN4790123456789) nor 10 digits")
        return {"card_number": clean_text(number)[:20]}, p

    card["name"] = _text_field(fields[1], "name", p)
    card["birth_date"] = parse_birth_date(fields[2], p, today)
    card["sex"] = {"1": "male", "2": "female"}.get(fields[3])
    if card["sex"] is None:
        p.error("bad_sex", "sex must be 1 (male) or 2 (female)")
    card["address"] = _text_field(fields[4], "address", p, optional=True)

    facility = FACILITY.match(fields[5])
    card["facility_code"] = facility.group(1) + facility.group(2) if facility else None
    if not facility:
        p.error("bad_facility", "registered facility must look like 'PP - FFF'")

    valid_from = parse_date(fields[6], "valid_from", p)
    valid_to = parse_date(fields[7], "valid_to", p, optional=True)
    issued = parse_date(fields[8], "issued", p, optional=True)
    card.update(valid_from=iso(valid_from), valid_to=iso(valid_to), issued=iso(issued))
    if valid_from and valid_to and valid_to < valid_from:
        p.error("bad_validity", "validity ends before it starts")

    management = fields[9]
    card["management_code"] = management if MANAGEMENT.match(management) else None
    if card["management_code"] is None and management not in ("", NULL):
        p.error("bad_management_code", "management code must be 14 digits")
    elif card["management_code"] and card["bhxh_number"] and management[-10:] != card["bhxh_number"]:
        p.warn("bhxh_mismatch", "the management code and the card number name different BHXH numbers")
    if card["management_code"] and not card["bhxh_number"]:
        card["bhxh_number"] = management[-10:]

    card["guardian"] = plain_text(fields[10], "guardian", p, optional=True)
    residence = fields[11]
    card["residence_code"] = residence if residence in ("4", "5", "6", "7") else None
    if card["residence_code"] is None and residence not in ("", NULL):
        p.warn("unknown_residence_code", "residence area code is not one of 4-7")
    card["five_year_date"] = iso(parse_date(fields[12], "five_year_date", p, optional=True))
    # Opaque issuer check string: kept exactly as read, never judged (no public algorithm).
    card["check_string"] = clean_text(fields[13])[:64]

    card["issuing_office"] = None
    if len(fields) == 16:
        if fields[14] in ("1", "2", "3", "4", "5"):
            level = int(fields[14])
            card["benefit_level"] = level
        elif fields[14] not in ("", NULL) or generation == "10":
            p.error("bad_benefit_level", "benefit level must be 1-5")
        card["issuing_office"] = parse_hex_text(fields[15], "issuing_office", p, optional=True)
    card["terminator"] = terminator

    if (generation == "15") != (len(fields) == 14):
        p.warn("unexpected_layout", f"a {generation}-character card usually has "
               f"{14 if generation == '15' else 16} fields, this one has {len(fields)}")
    if group is not None:
        expected = LEVEL_OF_GROUP.get(group)
        if expected is None:
            p.warn("unknown_group", f"group code {group} is not in the known list")
        elif expected != card["benefit_level"]:
            p.warn("benefit_group_mismatch",
                   f"group {group} normally has benefit level {expected}, the card says {card['benefit_level']}")
    if generation == "10":
        p.warn("lookup_required", "10-digit card: the full card number must be looked up by the hospital")
    return card, p


def validity(card: dict[str, Any], today: date) -> str | None:
    """`expired` / `not_yet_valid` against `today`, or None when the card is valid today."""
    if card.get("valid_from") and date.fromisoformat(card["valid_from"]) > today:
        return "not_yet_valid"
    if card.get("valid_to") and date.fromisoformat(card["valid_to"]) < today:
        return "expired"
    return None
