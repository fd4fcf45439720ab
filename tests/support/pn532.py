"""A PN532 stand-in for tests: the chip's side of NXP's host protocol (UM0701-02) in front of any
card object (`transmit(apdu) -> bytes`), on a pty (the UART) or as an I2C device.

It keeps the PN532's limits, so the transport is tested against them: a normal or extended frame
with TFI D4 and correct checksums or a NACK, at most 262 bytes of DataOut per InDataExchange
(the MI bit of Tg chains longer commands), at most `max_data_in` bytes of a card's answer per
frame (the status byte's MI asks for the next part), and the card answering only after
InListPassiveTarget found it. `card.transmit` raising (the card lifted) answers status 0x01 (the
card did not answer) and forgets the card, as the PN532 does.
"""

from __future__ import annotations

import os
import pty
import select
import threading
import time
import tty

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")


def answer_frame(data: bytes) -> bytes:
    body = b"\xD5" + data
    dcs = (-sum(body)) & 0xFF
    n = len(body)
    if n <= 255:
        return bytes([0, 0, 0xFF, n, (-n) & 0xFF]) + body + bytes([dcs, 0])
    hi, lo = n >> 8, n & 0xFF
    return bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF]) + body + bytes([dcs, 0])


class Pn532Emulator:
    """The PN532's command side. `card=None`: no card in the field. `mute`: the chip stops
    answering (no ACK, no answer). `sak`: 0x20 for an ISO 14443-4 card."""

    def __init__(self, card=None, *, max_data_in: int = 262, sak: int = 0x20):
        self.card, self.max_data_in, self.sak = card, max_data_in, sak
        self.mute = False
        self.selected = False
        self.commands: list[bytes] = []          # every command frame's data (code + params)
        self.apdus: list[bytes] = []             # what reached the card, whole
        self.largest_data_out = 0
        self._out = b""                          # a chained command being gathered
        self._pending = b""                      # the rest of a card's answer
        self._buf = b""

    # -- bytes in, bytes out ---------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Bytes from the host; returns the bytes the PN532 sends back (ACKs and answers)."""
        self._buf += data
        out = b""
        while True:
            i = self._buf.find(b"\x00\xFF")
            if i < 0:
                self._buf = self._buf[-1:]
                return out
            rest = self._buf[i + 2:]
            if len(rest) < 2:
                return out
            if rest[:2] == b"\x00\xFF":                      # the host's ACK: abort
                self._buf = rest[2:]
                self._out = self._pending = b""
                continue
            if rest[:2] == b"\xFF\xFF":
                if len(rest) < 5:
                    return out
                n, lcs, head = rest[2] << 8 | rest[3], rest[4], 5
                ok_len = (rest[2] + rest[3] + lcs) & 0xFF == 0
            else:
                n, lcs, head = rest[0], rest[1], 2
                ok_len = (n + lcs) & 0xFF == 0
            if not ok_len:
                self._buf = rest
                out += NACK
                continue
            if len(rest) < head + n + 1:
                return out
            body = rest[head:head + n + 1]
            self._buf = rest[head + n + 1:]
            if sum(body) & 0xFF or body[0] != 0xD4:
                out += NACK
                continue
            if self.mute:
                continue
            out += ACK + self.handle(bytes(body[1:-1]))
        return out

    def handle(self, data: bytes) -> bytes:
        self.commands.append(data)
        code, params = data[0], data[1:]
        if code == 0x02:                                     # GetFirmwareVersion: PN532 v1.6
            return answer_frame(b"\x03\x32\x01\x06\x07")
        if code in (0x14, 0x32):                             # SAMConfiguration, RFConfiguration
            return answer_frame(bytes([code + 1]))
        if code == 0x4A:                                     # InListPassiveTarget
            if self.card is None or params[:2] != b"\x01\x00":
                return answer_frame(b"\x4B\x00")
            self.selected = True
            uid = bytes.fromhex("04A1B2C3D4E5F6")
            ats = bytes.fromhex("0578807002")
            return answer_frame(b"\x4B\x01\x01\x00\x04" + bytes([self.sak, len(uid)]) + uid + ats)
        if code == 0x52:                                     # InRelease
            self.selected = False
            return answer_frame(b"\x53\x00")
        if code == 0x40:                                     # InDataExchange
            return answer_frame(b"\x41" + self._exchange(params))
        return ERROR_FRAME

    def _exchange(self, params: bytes) -> bytes:
        if not params:
            return ERROR_FRAME[5:6]
        tg, data = params[0], params[1:]
        self.largest_data_out = max(self.largest_data_out, len(data))
        if not self.selected or tg & 0x3F != 1:
            return b"\x27"                                   # no card selected
        if len(data) > 262:
            return b"\x07"
        if not data and self._pending:                       # the next part of the answer
            return self._part()
        self._out += data
        if tg & 0x40:                                        # MI: more of the command follows
            return b"\x00"
        apdu, self._out = self._out, b""
        self.apdus.append(apdu)
        try:
            self._pending = self.card.transmit(apdu)
        except Exception:  # noqa: BLE001 - the card left the field
            self.selected = False
            self.card = None
            return b"\x01"
        return self._part()

    def _part(self) -> bytes:
        part, self._pending = self._pending[:self.max_data_in], self._pending[self.max_data_in:]
        return bytes([0x40 if self._pending else 0x00]) + part


class PtyPn532:
    """The emulator on a pty's master: the transport opens `path`, as it would /dev/serial0."""

    def __init__(self, emulator: Pn532Emulator):
        self.emulator = emulator
        self.master, self.slave = pty.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pn532-standin", daemon=True)

    def start(self) -> "PtyPn532":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self.master], [], [], 0.05)
                if not readable:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            self.received += data
            reply = self.emulator.feed(data)
            if reply:
                os.write(self.master, reply)

    def unplug(self) -> None:
        """The reader's cable comes off: the pty's master closes (reads on the port fail)."""
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1

    def __enter__(self) -> "PtyPn532":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.master != -1:
            self.unplug()


class I2cPn532:
    """The emulator as the I2C device the transport's I2cLink reads and writes (UM0701-02 6.2.4):
    a read starts with the ready byte (0x01 once an answer waits, else 0x00)."""

    def __init__(self, emulator: Pn532Emulator, *, busy_reads: int = 2):
        self.emulator, self.busy_reads = emulator, busy_reads
        self._queue: list[bytes] = []
        self._busy = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        reply = self.emulator.feed(data)
        # on I2C the ACK and the answer are read separately
        while reply:
            cut = 6 if reply.startswith(ACK) else len(reply)
            self._queue.append(reply[:cut])
            reply = reply[cut:]
        self._busy = self.busy_reads

    def read(self, n: int) -> bytes:
        if self._busy or not self._queue:
            self._busy = max(0, self._busy - 1)
            return bytes(n)
        frame = self._queue.pop(0)
        return (b"\x01" + frame + bytes(n))[:n]

    def close(self) -> None:
        self.closed = True
