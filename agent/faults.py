"""A fault of the running station, as every room passes it on: a fixed code for monitoring (the
health message's `fault_codes`, agent/schemas/health.json), a text for people, and its level."""

from __future__ import annotations

from dataclasses import dataclass

#: codes that are warnings: the station still checks in and the LEDs still say everything
WARNING_CODES = frozenset({"voice"})


@dataclass(frozen=True)
class Fault:
    code: str
    text: str

    @property
    def level(self) -> str:
        """"warning" (IT's to know; `status` exits 1) or "fault" (`status` exits 2)."""
        return "warning" if self.code in WARNING_CODES else "fault"
