"""The reader's pad with or without a simulated card on it (a Transport): empty, it answers as a
reader with no card in the field does (CardLost); a card can be laid on it now or a moment later,
and lifted. For the station's tests and `scanner-agent chip test` in tests (SCANNER_AGENT_SIM_CHIP)."""

from __future__ import annotations

import threading
import time

from agent.chip.transport import CardLost


class SimPad:
    def __init__(self, chip=None, *, after_s: float = 0.0):
        self._lock = threading.Lock()
        self.chip, self.from_t = chip, time.monotonic() + after_s
        self.commands = 0          # every command, answered or not

    def place(self, chip, after_s: float = 0.0) -> None:
        """Lay `chip` (an agent.sim.chip.SimChip) on the pad, `after_s` seconds from now."""
        with self._lock:
            self.chip, self.from_t = chip, time.monotonic() + after_s

    def lift(self) -> None:
        with self._lock:
            self.chip = None

    def transmit(self, apdu: bytes) -> bytes:
        with self._lock:
            self.commands += 1
            chip = self.chip if time.monotonic() >= self.from_t else None
        if chip is None:
            raise CardLost("no card in the field")
        return chip.transmit(apdu)
