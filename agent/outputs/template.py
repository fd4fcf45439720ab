"""What is typed or sent for a check-in: a template per card kind, with the card's fields.

    {raw}          the exact QR text (a BHYT code is ASCII; a CCCD carries the name in UTF-8)
    {card_number} {id_number} {name} ...   any field of the card read
    {flags}        the check-in's flags, comma-separated (priority_elderly,other_facility)
    {enter} {tab}  the keys

Card data never becomes a key: a QR is the patient's (or an attacker's) text, and an Enter, Tab,
CR or escape inside it would submit or move through the reception form. Every field and {raw} is
typed with its control, format and line-separator characters removed (see `card_text`); only the
template's own {enter}/{tab} (and the configured prefix/suffix) are keys.
"""

from __future__ import annotations

import string
import unicodedata
from typing import Any

from agent.cards.model import CardKind

KEYS = {"enter": "\n", "tab": "\t"}
#: fields that are ASCII in every valid card: the only ones a keyboard template may use
ASCII_FIELDS = {
    CardKind.BHYT: {"raw", "card_number", "generation", "bhxh_number", "birth_date", "sex", "facility_code", "valid_from",
             "valid_to", "issued", "management_code", "benefit_level", "group_code", "province_code",
             "residence_code", "five_year_date", "check_string", "flags"},
    CardKind.CCCD: {"id_number", "old_id_number", "birth_date", "sex", "issued", "flags"},
}


#: control (C0, DEL, C1), format (bidi overrides, zero-width), surrogate, private-use, unassigned,
#: line and paragraph separators: none is typed or sent from card data
_NOT_TYPED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def card_text(value: str) -> str:
    """Card data as it may be typed or sent: without any character that could act as a key or
    a control (removed, not replaced: a space would still shift the reception form's fields)."""
    return "".join(ch for ch in value if unicodedata.category(ch) not in _NOT_TYPED)


class TemplateError(ValueError):
    pass


def templates(output_cfg: Any) -> dict[CardKind, str]:
    """An output's templates by card kind ([output.*] template_bhyt, template_cccd): a kind not
    here is not typed or sent."""
    return {CardKind.BHYT: output_cfg.template_bhyt, CardKind.CCCD: output_cfg.template_cccd}


def typed_fields(template: str) -> list[str]:
    """The placeholders of a template; TemplateError for a malformed one."""
    try:
        names = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise TemplateError(f"template {template!r}: {exc}") from None
    for f in names:
        if not f.isidentifier():
            raise TemplateError(f"template {template!r}: {{{f}}} is not a field name")
    return names


def literal_text(template: str) -> str:
    """The template's own characters, placeholders left out (what is typed whatever the card)."""
    return "".join(lit for lit, *_ in string.Formatter().parse(template))


def render(template: str, card: dict[str, Any], raw: str) -> str:
    """The text for one check-in (a missing field is empty)."""
    values = {**{k: "" if v is None else card_text(str(v)) for k, v in card.items()}, "raw": card_text(raw),
              **KEYS}
    return "".join(lit + (values.get(f, "") if f is not None else "")
                   for lit, f, _, _ in string.Formatter().parse(template))
