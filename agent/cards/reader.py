"""QR text -> CardRead. Never raises: every input gets a verdict."""

from __future__ import annotations

import logging
import re
from datetime import date

from agent import clock
from agent.cards import bhyt, cccd
from agent.cards.model import CardKind, CardRead, Problem
from agent.cards.sanitize import MAX_PAYLOAD_CHARS, clean_payload, to_text

log = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]{1,20}:(//)?\S")


def classify_other(text: str) -> str:
    """What a non-card code is, for the staff message: a bank QR, a link, or text."""
    if text.startswith("000201"):
        return "emvco"  # VietQR / EMVCo merchant or transfer code
    if _URL.match(text):
        return "url"
    return "text" if text else "empty"


def _other(text: str) -> CardRead:
    what = classify_other(text)
    return CardRead("other", "unsupported",
                    [Problem("not_a_card", f"not a BHYT or CCCD card ({what})")], {"type": what})


def read_card(data: str | bytes, today: date | None = None) -> CardRead:
    """Read a decoded QR payload as a BHYT or CCCD card and judge it against `today`, default the
    station's today (agent.clock.today: `[station] timezone`, never the system's zone)."""
    try:
        return _read(data, today or clock.today())
    except Exception:  # noqa: BLE001 - a parser bug must never take the station down
        log.exception("card reader failed on a %d-character payload", len(data) if data is not None else 0)
        return CardRead("other", "invalid", [Problem("reader_error", "the code could not be read", True)],
                        {"type": "unknown"})


def _read(data: str | bytes, today: date) -> CardRead:
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        return CardRead("other", "invalid", [Problem("bad_input", "the payload is not text", True)],
                        {"type": "unknown"})
    if len(data) > MAX_PAYLOAD_CHARS:
        return CardRead("other", "invalid", [Problem(
            "payload_too_long", f"payload longer than {MAX_PAYLOAD_CHARS} characters", True)],
            {"type": "unknown"})
    raw, utf8_ok = to_text(data)
    text = clean_payload(raw)
    tokens = text.split("|")

    # CCCD first: its compact birth date in field 3 cannot be a BHYT sex field, while its
    # all-digit old-ID field would pass BHYT's loose "field 1 looks like hex" test.
    if cccd.looks_like(tokens):
        kind, (card, problems) = CardKind.CCCD, cccd.parse(tokens, today)
    elif bhyt.looks_like(tokens):
        kind, (card, problems) = CardKind.BHYT, bhyt.parse(tokens, today)
    else:
        return _other(text)

    if not utf8_ok:
        problems.error("bad_utf8", "the code contains bytes that are not valid UTF-8")
    if problems.fatal:
        verdict = "invalid"
    else:
        verdict = (bhyt.validity(card, today) if kind == CardKind.BHYT else None) or "ok"
    return CardRead(kind, verdict, problems.items, card)
