"""A reader factory for tests (agent.chip.reader looks it up as it would agent.chip.readers):
`open_reader(kind, device, timeout_s)` gives the pad PAD, on which a test lays a simulated card
(agent.sim.pad.SimPad); `reader_check` answers as a present reader does, or MISSING says why not."""

from __future__ import annotations

from agent.chip.transport import ChipError
from agent.sim.pad import SimPad

PAD = SimPad()
MISSING: str | None = None


def open_reader(kind: str, device: str | None, timeout_s: float) -> SimPad:
    if MISSING:
        raise ChipError(MISSING)
    return PAD


def reader_check(kind: str, device: str | None, timeout_s: float) -> tuple[bool, str]:
    return (False, MISSING) if MISSING else (True, f"{kind} reader (simulated) answers")
