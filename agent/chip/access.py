"""The keys that open a CCCD's chip, worked out from its QR, and the order they are tried in.

A chip answers only a terminal that proves it knows data printed on the card (ICAO Doc 9303
part 11: BAC, section 4.3; PACE, section 4.4). The QR gives all of it but the expiry date:

- PACE with the CAN: public CCCD readers use the last 6 digits of the ID number as the Card Access
  Number (e.g. github.com/phanvankhaicd/cccd_vietnam, example/lib/main.dart: ID 001200004595, CAN
  004595). Tried first: it needs nothing the QR lacks.
- BAC with the MRZ's document number, birth date and expiry date (ICAO 9303-11 9.7.2). On the CCCD
  the MRZ's document number is the last 9 digits of the 12-digit ID, the whole ID standing in the
  optional data: `IDVNM0930470641001093047064<<2` / `9301054M3301052VNM...` for ID 001093047064
  (github.com/namxike24/ekyc, demo/src/main/java/ai/ftech/demo/JavaActivity.java).
- The expiry is not in the QR. The law sets it: the card runs to the holder's birthday at the next
  age at which it must be changed. Luật Căn cước công dân 2014 (Law 59/2014/QH13) art. 21: "1. Thẻ
  Căn cước công dân phải được đổi khi công dân đủ 25 tuổi, đủ 40 tuổi và đủ 60 tuổi. 2. Trường hợp
  thẻ Căn cước công dân được cấp, đổi, cấp lại trong thời hạn 2 năm trước tuổi quy định tại khoản 1
  Điều này thì vẫn có giá trị sử dụng đến tuổi đổi thẻ tiếp theo." Luật Căn cước 2023 (Law
  26/2023/QH15, in force 1 July 2024) art. 21 keeps this and adds 14 (cards may now be issued under
  14): "1. Công dân Việt Nam đã được cấp thẻ căn cước phải thực hiện thủ tục cấp đổi thẻ căn cước khi
  đủ 14 tuổi, 25 tuổi, 40 tuổi và 60 tuổi. 2. Thẻ căn cước đã được cấp, cấp đổi, cấp lại trong thời
  hạn 2 năm trước độ tuổi cấp đổi thẻ căn cước quy định tại khoản 1 Điều này có giá trị sử dụng đến
  tuổi cấp đổi thẻ căn cước tiếp theo." One rule serves both laws: no card was issued under 14
  before 2024, so the 14 only changes cards issued under 14. "Within 2 years before" is read as from
  the birthday 2 years before the milestone (aged 23, 38, 58: the reading the public explanations
  give); a card issued on that very day also gets the other reading as a second candidate.
  The expiry is the milestone birthday itself: 05/01/1993 issued 24/07/2021 -> 05/01/2033 in the
  ekyc sample above; 27/04/2000 -> 27/04/2025 in cccd_vietnam's example. A card issued from 58
  (within 2 years before 60) or from 60 does not expire; its MRZ is reported to carry 991231.
- A 29 February birthday in a year without one: the law counts age by birthdays (đủ N tuổi) and
  says nothing of that day. Bộ luật Dân sự 2015 art. 148(4) ends a period counted in months that
  falls on a day the month lacks on the month's last day; by that analogy 28/02 is tried first and
  01/03 (where software rolls over) second.

Public CCCD reader code checked for the expiry: hobby OCR code (calculate_expiration_date, seen in
several repositories) takes the next milestone from today's age and ignores the 2-year rule and
14; SDK samples ask the user to type the expiry. None derives it from the issue date.

Everything here is from the QR's fields; nothing is logged (it is personal data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

#: the ages at which a card must be changed (Luật Căn cước 2023 art. 21(1); 2014: 25, 40, 60)
MILESTONES = (14, 25, 40, 60)
#: "within 2 years before" a milestone (art. 21(2)): issued from this many years before it
GRACE_YEARS = 2
#: the MRZ expiry reported on cards that do not expire
NO_EXPIRY = "991231"
#: chip CCCDs (with this QR and a chip to open) exist from Thông tư 06/2021/TT-BCA, in force 23/01/2021
CHIP_CARDS_FROM = date(2021, 1, 23)
#: the age from which a card could be had before 2024 (Luật Căn cước công dân 2014 art. 19(1): "từ đủ
#: 14 tuổi"); younger children get one from Luật Căn cước 2023's entry into force (art. 19)
ADULT_CARD_AGE = 14
UNDER_14_FROM = date(2024, 7, 1)
#: the two readings of a 29 February birthday in a year without one, the first tried first
FEB29 = ("28/02", "01/03")

_ID = re.compile(r"[0-9]{12}")
_ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


@dataclass
class ChipAccess:
    """What the station tries to open one card's chip with (chip-brief: fields fixed)."""

    document_number: str                      # the MRZ's: the last 9 digits of the ID
    id_number: str
    birth_yymmdd: str | None                  # None: the QR has no whole birth date (no BAC)
    expiry_candidates: list[tuple[str, str]] = field(default_factory=list)   # (yymmdd, rule in words)
    can: str = ""                             # PACE: the last 6 digits of the ID

    def attempts(self) -> list[tuple[Any, ...]]:
        """The terminal's order: ("pace-can", can), then ("bac", (document_number, birth_yymmdd,
        expiry_yymmdd), rule) for each expiry candidate."""
        out: list[tuple[Any, ...]] = [("pace-can", self.can)]
        if self.birth_yymmdd is not None:
            out += [("bac", (self.document_number, self.birth_yymmdd, expiry), rule)
                    for expiry, rule in self.expiry_candidates]
        return out

    def to_dict(self) -> dict[str, Any]:
        """`scanner-agent parse --json`'s `chip_access`: what the station would try, in order."""
        attempts: list[dict[str, Any]] = []
        for attempt in self.attempts():
            if attempt[0] == "pace-can":
                attempts.append({"method": "pace-can", "can": attempt[1]})
            else:
                doc, birth, expiry = attempt[1]
                attempts.append({"method": "bac", "document_number": doc, "birth_yymmdd": birth,
                                 "expiry_yymmdd": expiry, "rule": attempt[2]})
        out: dict[str, Any] = {"id_number": self.id_number, "document_number": self.document_number,
                               "birth_yymmdd": self.birth_yymmdd, "can": self.can, "attempts": attempts}
        if self.birth_yymmdd is None:
            out["note"] = ("the QR gives no whole birth date, so no BAC key can be made (BAC needs the "
                           "MRZ's day, month and year of birth and an expiry that counts from it): "
                           "PACE with the CAN only")
        return out


def yymmdd(day: date) -> str:
    """A date as the MRZ writes it (ICAO 9303-3 4.4: two-digit year, month, day)."""
    return f"{day.year % 100:02d}{day.month:02d}{day.day:02d}"


def anniversary(birth: date, years: int, feb29: str = FEB29[0]) -> date:
    """The day one born on `birth` turns `years` old; a 29 February birthday in a year without one
    falls on `feb29` ("28/02" or "01/03"; see the module's docstring)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:                     # 29 February, and the year has none
        return date(birth.year + years, 2, 28) + timedelta(days=0 if feb29 == "28/02" else 1)


def age_on(birth: date, day: date, feb29: str = FEB29[0]) -> int:
    """Whole years of age on `day`, counted by birthdays (đủ N tuổi)."""
    age = day.year - birth.year
    if age > 0 and anniversary(birth, age, feb29) > day:
        age -= 1
    return age


def _expiry_age(issue_age: int) -> int | None:
    """The milestone a card issued at this age runs to (None: it does not expire)."""
    if issue_age >= MILESTONES[-1]:
        return None
    upcoming = [m for m in MILESTONES if m > issue_age]
    if issue_age >= upcoming[0] - GRACE_YEARS:        # art. 21(2): to the milestone after the next
        upcoming = upcoming[1:]
    return upcoming[0] if upcoming else None


def _rule(issue_age: int, expiry_age: int | None, feb29: str | None) -> str:
    nxt = next(m for m in (*MILESTONES, 1000) if m > issue_age)
    if issue_age >= MILESTONES[-1]:
        text = f"issued at {issue_age}, from {MILESTONES[-1]}: no expiry"
    elif expiry_age != nxt:
        text = (f"issued at {issue_age}, within {GRACE_YEARS} years before {nxt} (art. 21(2)): "
                + (f"to the birthday at {expiry_age}" if expiry_age else "no expiry"))
    else:
        text = f"issued at {issue_age} (art. 21(1)): to the birthday at {expiry_age}"
    if expiry_age is None:
        text += f" ({NO_EXPIRY})"
    return text + (f"; 29 February birthday taken as {feb29}" if feb29 else "")


def _add(out: list[tuple[str, str]], expiry: str, rule: str) -> None:
    if all(e != expiry for e, _ in out):
        out.append((expiry, rule))


def expiry_from_issue(birth: date, issued: date) -> list[tuple[str, str]]:
    """The expiry candidates of a card issued on `issued` (most likely first): the law's, for each
    reading of a 29 February birthday and of an issue date on the boundary day."""
    out: list[tuple[str, str]] = []
    readings = FEB29 if (birth.month, birth.day) == (2, 29) else (FEB29[0],)
    for feb29 in readings:
        note = feb29 if len(readings) > 1 else None
        issue_age = age_on(birth, issued, feb29)
        ages = [issue_age]
        if issue_age >= 1 and anniversary(birth, issue_age, feb29) == issued:
            ages.append(issue_age - 1)       # issued on the birthday itself: "before" read strictly too
        for n, age in enumerate(ages):
            milestone = _expiry_age(age)
            if milestone is None:
                _add(out, NO_EXPIRY, _rule(age, None, note))
            else:
                rule = _rule(age, milestone, note)
                if n:
                    rule += f" (issued on the birthday at {issue_age}, counted as before it)"
                _add(out, yymmdd(anniversary(birth, milestone, feb29)), rule)
    return out


def _issue_windows() -> list[tuple[int | None, int, int | None]]:
    """(milestone or None, first, last issue age or None: no end) for each outcome of the law."""
    out: list[list] = []
    for age in range(MILESTONES[-1] + 1):
        milestone = _expiry_age(age)
        if out and out[-1][0] == milestone:
            out[-1][2] = age
        else:
            out.append([milestone, age, age])
    out[-1][2] = None                        # no expiry: issued from 58 on, at any age
    return [tuple(w) for w in out]           # type: ignore[misc]


def _earliest_issue(birth: date, first: int, last: int | None, feb29: str) -> date | None:
    """The first day a chip card can have been issued to someone aged `first`..`last`, or None:
    under 14 from 1 July 2024 (Luật Căn cước 2023), from 14 since chip cards exist (23/01/2021)."""
    young = ADULT_CARD_AGE
    if first < young:
        day = max(anniversary(birth, first, feb29), UNDER_14_FROM)
        if day < anniversary(birth, young if last is None else min(last + 1, young), feb29):
            return day
    if last is None or max(first, young) <= last:
        return max(anniversary(birth, max(first, young), feb29), CHIP_CARDS_FROM)
    return None


def expiry_without_issue(birth: date, today: date | None) -> list[tuple[str, str]]:
    """The expiry candidates when the QR has no issue date (the 6-field layout): every milestone
    a chip card could run to, given when such cards were issued (from 23/01/2021; under 14 from
    1 July 2024) and, with `today`, that it was issued by today. Cards valid today first, soonest
    expiry first (no expiry last of them); then expired cards, most recent first."""
    found: list[tuple[date | None, str]] = []
    readings = FEB29 if (birth.month, birth.day) == (2, 29) else (FEB29[0],)
    for feb29 in readings:
        for milestone, first, last in _issue_windows():
            start = _earliest_issue(birth, first, last, feb29)
            end = date.max if last is None else anniversary(birth, last + 1, feb29) - timedelta(days=1)
            if start is None or start > min(end, today or date.max):
                continue                     # no chip card can have been issued at these ages
            ages = f"{first} or over" if last is None else f"{first}-{last}"
            what = f"runs to the birthday at {milestone}" if milestone else f"does not expire ({NO_EXPIRY})"
            rule = f"no issue date in the QR: a card issued aged {ages} {what}"
            if len(readings) > 1:
                rule += f"; 29 February birthday taken as {feb29}"
            found.append((None if milestone is None else anniversary(birth, milestone, feb29), rule))

    def order(item: tuple[date | None, str]) -> tuple[int, int]:
        expiry = item[0]
        if expiry is None:
            return (0, date.max.toordinal())
        if today is None or expiry >= today:
            return (0, expiry.toordinal())
        return (1, -expiry.toordinal())

    out: list[tuple[str, str]] = []
    for expiry, rule in sorted(found, key=order):
        _add(out, NO_EXPIRY if expiry is None else yymmdd(expiry), rule)
    return out


def _whole_date(text: Any) -> date | None:
    m = _ISO.fullmatch(text) if isinstance(text, str) else None
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def issued_of(card: dict[str, Any]) -> date | None:
    """The issue date of a parsed CCCD's card fields (`issued`, YYYY-MM-DD), or None."""
    return _whole_date(card.get("issued"))


def chip_access(card: dict[str, Any], issued: date | None, *, today: date | None = None) -> ChipAccess:
    """The access data for a CCCD from its parsed QR fields (agent.cards.cccd: `id_number`,
    `birth_date` YYYY-MM-DD, or YYYY-MM / YYYY when only that is printed). `issued`: the QR's issue
    date, None when the QR has none; `today` narrows the candidates then (see
    expiry_without_issue). Raises ValueError, with the reason, when the card has no 12-digit ID
    (nothing can be derived)."""
    number = card.get("id_number")
    if not isinstance(number, str) or not _ID.fullmatch(number):
        raise ValueError("the QR has no 12-digit citizen ID: no CAN nor MRZ document number")
    birth = _whole_date(card.get("birth_date"))
    candidates: list[tuple[str, str]] = []
    if birth is not None:
        if issued is not None and issued >= birth:
            candidates = expiry_from_issue(birth, issued)
        else:
            candidates = expiry_without_issue(birth, today)
        _add(candidates, NO_EXPIRY, f"{NO_EXPIRY} last whatever the rule gives: cards that do not "
                                    "expire are reported to carry it")
    return ChipAccess(document_number=number[-9:], id_number=number,
                      birth_yymmdd=yymmdd(birth) if birth else None,
                      expiry_candidates=candidates if birth else [], can=number[-6:])
