"""Counter facts a card gives at the moment of the scan (the check-in's `flags`): priority by the
Law on Medical Examination and Treatment 2023 (15/2023/QH15, art. 3(2)), a card registered at
another facility, and (added by the station from its outbox) a second check-in today.

Pure functions of the card read, the date and the config: `scanner-agent parse --json` shows the
same flags the station sends, except `repeat_today`, which needs the station's history, and
`chip_mismatch` (schema 1.2), which needs the card's chip (agent.chip.counter).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date

from agent.cards.model import CardKind, CardRead
from agent.config import facility_code

#: Every flag, in the order they are listed in a check-in (agent/schemas/checkin.json).
FLAGS = ("priority_child", "priority_elderly", "priority_merit", "other_facility", "repeat_today",
         "chip_mismatch")
PRIORITY = ("priority_child", "priority_elderly", "priority_merit")
#: Law 15/2023/QH15 art. 3(2): children under 6, people aged 75 and over.
CHILD_UNDER = 6
ELDERLY_FROM = 75
#: BHYT group codes of the law's priority groups: CC and CK (người có công với cách mạng, people
#: with merit to the revolution), TE (trẻ em dưới 6 tuổi, children under 6). TE gives
#: `priority_child` only when the birth date cannot tell (a TE card stays valid until 30 September
#: after the sixth birthday, so the holder may be 6 already); every other configured group
#: `priority_merit`.
LAW_PRIORITY_GROUPS = ("CC", "CK", "TE")
CHILD_GROUP = "TE"

def _age(born: date, today: date) -> int:
    """Whole years; a 29 February birthday comes on 1 March in other years."""
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def age_range(birth_date: str | None, today: date) -> tuple[int, int] | None:
    """(youngest, oldest) age the birth date allows: one age for a full date, a range for `YYYY`
    or `YYYY-MM`; None when there is no usable date."""
    if not isinstance(birth_date, str):
        return None
    parts = birth_date.split("-")
    try:
        year = int(parts[0])
        if len(parts) == 3:
            born = date(year, int(parts[1]), int(parts[2]))
            return _age(born, today), _age(born, today)
        if len(parts) == 2:
            month = int(parts[1])
            first, last = date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        elif len(parts) == 1:
            first, last = date(year, 1, 1), date(year, 12, 31)
        else:
            return None
    except ValueError:
        return None
    return _age(last, today), _age(first, today)


def card_flags(read: CardRead, today: date, facility_codes: Iterable[str] = (),
               priority_groups: Iterable[str] = LAW_PRIORITY_GROUPS) -> list[str]:
    """The flags the card itself gives (every one but `repeat_today`), in FLAGS order, ages counted
    on `today` (the station's: agent.clock.today). Only a certain age counts: a year-only birth
    date gives priority only when every day of that year does."""
    if not read.is_card or read.verdict in ("invalid", "unsupported"):
        return []
    card = read.card
    out: set[str] = set()
    ages = age_range(card.get("birth_date"), today)
    if ages is not None:
        youngest, oldest = ages
        if 0 <= oldest < CHILD_UNDER:
            out.add("priority_child")
        if youngest >= ELDERLY_FROM:
            out.add("priority_elderly")
    groups = {g.upper() for g in priority_groups}
    group = card.get("group_code") if read.kind == CardKind.BHYT else None
    if isinstance(group, str) and group.upper() in groups:
        if group.upper() != CHILD_GROUP:
            out.add("priority_merit")
        elif ages is None or ages[0] < CHILD_UNDER <= ages[1]:
            # the age decides when the birth date settles it; TE only breaks a tie (a `YYYY` that
            # allows both 5 and 6) or stands in for a date that cannot be read
            out.add("priority_child")
    ours = {c for c in (facility_code(f) for f in facility_codes) if c}
    facility = facility_code(card.get("facility_code") or "") if read.kind == CardKind.BHYT else None
    if ours and facility and facility not in ours:
        out.add("other_facility")
    return [f for f in FLAGS if f in out]
