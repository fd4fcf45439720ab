"""A small ISO 7816-4 card for the reader tests: one applet, one file; it can be lifted or hang.
(The simulated CCCD chip, agent/sim/chip.py, is the real one; the readers need only APDUs.)"""

from __future__ import annotations

import threading

from agent.chip.transport import CardLost

SELECT_APPLET = bytes.fromhex("00A4040C07A0000002471001")


def read_binary(offset: int, le: int) -> bytes:
    """READ BINARY at offset: short Le up to 256, extended Le beyond."""
    if le <= 256:
        return bytes([0x00, 0xB0, offset >> 8, offset & 0xFF, le & 0xFF])
    return bytes([0x00, 0xB0, offset >> 8, offset & 0xFF, 0x00, le >> 8, le & 0xFF])


class ToyCard:
    """SELECT (the CCCD applet), READ BINARY (short and extended Le) and an echo (INS 0xEE, the
    command's data back, for long commands). `lift_after`: raise CardLost on the APDU after that
    many (the card left the field); `hang_at`: block on that APDU until `release` is set."""

    def __init__(self, data: bytes, *, lift_after: int | None = None, hang_at: int | None = None):
        self.data, self.lift_after, self.hang_at = data, lift_after, hang_at
        self.count = 0
        self.release = threading.Event()

    def transmit(self, apdu: bytes) -> bytes:
        self.count += 1
        if self.lift_after is not None and self.count > self.lift_after:
            raise CardLost("lifted")
        if self.hang_at is not None and self.count == self.hang_at:
            self.release.wait(30)
        ins = apdu[1]
        if ins == 0xA4:
            return b"\x90\x00" if apdu[5:] == SELECT_APPLET[5:] else b"\x6A\x82"
        if ins == 0xB0:
            offset = int.from_bytes(apdu[2:4], "big")
            if len(apdu) == 5:
                le = apdu[4] or 256
            elif len(apdu) == 7 and apdu[4] == 0:
                le = int.from_bytes(apdu[5:7], "big") or 65536
            else:
                return b"\x67\x00"
            return self.data[offset:offset + le] + b"\x90\x00"
        if ins == 0xEE:                                   # extended Lc: 00 LcHi LcLo data
            n = int.from_bytes(apdu[5:7], "big")
            return apdu[7:7 + n] + b"\x90\x00"
        return b"\x6D\x00"
