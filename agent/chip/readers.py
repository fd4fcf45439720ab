"""The reader named by `[chip] reader` as a Transport, and doctor's line for it.

kinds: "pcsc" (pcscd and pyscard: ACR122U, any CCID reader; `device` picks a reader by part of
its name), "pn532" (a PN532 on the Pi's UART or I2C; `device` as agent.chip.pn532.parse_device
reads it), "none" (no chip reading).
"""

from __future__ import annotations

from agent.chip.transport import ChipError, Transport

KINDS = ("pcsc", "pn532", "none")


def open_reader(kind: str, device: str | None, timeout_s: float) -> Transport:
    """Open the configured reader; ChipError with what to do when it is missing or unusable."""
    if kind == "pcsc":
        from agent.chip.pcsc import PcscTransport
        return PcscTransport(device or None, timeout_s)
    if kind == "pn532":
        from agent.chip.pn532 import Pn532Transport
        return Pn532Transport.open(device or None, timeout_s)
    if kind == "none":
        raise ChipError("no chip reader configured ([chip] reader = \"none\")")
    raise ChipError(f"unknown chip reader {kind!r}: one of {', '.join(KINDS)}")


def reader_check(kind: str, device: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(ok, one line) for doctor: the reader is there and answers; no card is needed."""
    if kind == "none":
        return True, "no chip reader configured (chip reading off)"
    if kind == "pcsc":
        from agent.chip import pcsc
        return pcsc.reader_check(device or None, timeout_s)
    if kind == "pn532":
        from agent.chip import pn532
        return pn532.reader_check(device or None, timeout_s)
    return False, f"unknown chip reader {kind!r}: one of {', '.join(KINDS)}"
