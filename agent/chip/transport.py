"""The link to a chip: what every reader (PC/SC, PN532, the simulated chip) offers the terminal.

A transport carries one command APDU to the card and brings back its response (data + SW1 SW2).
It never hangs: each transport has its own timeout and raises CardLost on it, as it does when
the card left the field or the reader went away, so a patient who lifts the card early costs a
retry prompt, never a stuck station.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol


class CardLost(Exception):
    """The card left the field, the reader or its link went away, or the card did not answer in time."""


class ChipError(Exception):
    """A chip or reader problem that is not a lost card: no reader, a refused command, a bad answer."""


class Transport(Protocol):
    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU; return the response data followed by SW1 SW2.

        Raises CardLost when the card left the field, the link broke or the answer timed out."""
        ...


def wait_for_card(present: Callable[[], bool], connect: Callable[[], None], timeout_s: float,
                  poll_s: float) -> bool:
    """True once `present()` or `connect()` succeeds (connect raises CardLost while the field is
    empty), False after timeout_s: what every reader's wait_for_card does, under its own lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        if present():
            return True
        try:
            connect()
            return True
        except CardLost:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(poll_s, left))
