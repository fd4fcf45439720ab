"""A reader factory for tests (agent.chip.reader looks it up as it would agent.chip.readers):
`open_reader(kind, device, timeout_s)` gives the pad PAD, on which a test lays a simulated card
(agent.sim.pad.SimPad); `reader_check` answers as a present reader does, or MISSING says why not."""

from __future__ import annotations

import datetime as dt

from agent.chip.transport import ChipError
from agent.sim.chip import SimCard
from agent.sim.pad import SimPad

#: the chip of the CCCD sample QR (support.payloads.CCCD): born 01/01/1990, issued 15/06/2021 at
#: 31, so it runs to the 40th birthday (agent.chip.access)
CCCD_CARD = SimCard(id_number="079090001234", name="Nguyễn Văn An", birth_date=dt.date(1990, 1, 1),
                    issued=dt.date(2021, 6, 15), expiry=dt.date(2030, 1, 1))

PAD = SimPad()
MISSING: str | None = None


def open_reader(kind: str, device: str | None, timeout_s: float) -> SimPad:
    if MISSING:
        raise ChipError(MISSING)
    return PAD


def reader_check(kind: str, device: str | None, timeout_s: float) -> tuple[bool, str]:
    return (False, MISSING) if MISSING else (True, f"{kind} reader (simulated) answers")
