"""The link to a contactless card: what every reader (PC/SC, PN532, the simulated chip) offers."""

from __future__ import annotations

from typing import Protocol


class CardLost(Exception):
    """The card left the field or the link broke (also on the transport's own timeout)."""


class ChipError(Exception):
    """The card answered something that cannot be used (an error status, a malformed answer)."""


class Transport(Protocol):
    def transmit(self, apdu: bytes) -> bytes:
        """Sends a command APDU; returns response data + SW1 SW2. Raises CardLost, never hangs."""
        ...
