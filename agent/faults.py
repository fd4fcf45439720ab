"""A fault of the running station, as every room passes it on: a fixed code for monitoring (the
health message's `fault_codes`, agent/schemas/health.json), a text for people. Those in WARNING_CODES are
warnings (`fleet`); the status file keeps the texts, whose `voice:` ones `status` counts as warnings."""

from __future__ import annotations

from dataclasses import dataclass

#: codes that are warnings: the station still checks in and the LEDs still say everything
WARNING_CODES = frozenset({"voice"})


@dataclass(frozen=True)
class Fault:
    code: str
    text: str
