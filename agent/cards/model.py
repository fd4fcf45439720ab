"""The result of reading one QR text: what kind of code, a verdict, the problems found."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class CardKind(StrEnum):
    """The cards a check-in is made of. A str: the values are what JSON, the outbox and MQTT carry."""
    BHYT = "bhyt"     # health insurance card
    CCCD = "cccd"     # citizen identity card


#: the field that names one card of a kind (the same card read twice has the same number)
NUMBER_FIELD = {CardKind.BHYT: "card_number", CardKind.CCCD: "id_number"}
KINDS = (*(k.value for k in CardKind), "other")
VERDICTS = ("ok", "expired", "not_yet_valid", "invalid", "unsupported")


@dataclass(frozen=True)
class Problem:
    """One finding about a read. `code` is stable (integrators match on it); `message` is for people."""

    code: str
    message: str
    #: True when the problem makes the read `invalid`; False for a warning kept with `ok`.
    fatal: bool = False

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass
class CardRead:
    kind: str                 # a CardKind, or "other"
    verdict: str
    problems: list[Problem] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def is_card(self) -> bool:
        return self.kind in NUMBER_FIELD

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of `scanner-agent parse --json` and of a check-in's card part."""
        return {
            "kind": self.kind,
            "verdict": self.verdict,
            "problems": [p.to_dict() for p in self.problems],
            "card": dict(self.card),
        }


class Problems:
    """Collects problems while a parser walks the fields."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def error(self, code: str, message: str) -> None:
        self.items.append(Problem(code, message, fatal=True))

    def warn(self, code: str, message: str) -> None:
        if any(p.code == code for p in self.items):
            return    # one warning of a kind is enough (both dates slashed: one `slashed_dates`)
        self.items.append(Problem(code, message, fatal=False))

    @property
    def fatal(self) -> bool:
        return any(p.fatal for p in self.items)
