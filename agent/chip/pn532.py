"""A PN532 on the Pi's UART (HSU) or I2C as a Transport: NXP's host protocol, written out here.

The protocol is NXP's PN532 User Manual UM0701-02: frames in 6.2.1 (normal and extended
information frames, ACK, NACK, the error frame), the HSU wake-up in 6.2.2 / 7.2.11, I2C's
ready byte in 6.2.4, and the commands in 7 (GetFirmwareVersion, SAMConfiguration,
RFConfiguration's MaxRetries, InListPassiveTarget, InDataExchange, InRelease). ISO 14443-4
APDUs go through InDataExchange, with which the PN532 runs the T=CL block protocol itself
(I-blocks, WTX, the chaining towards the card); a command longer than one frame is sent in
chunks with the MI bit of the Tg byte, and an answer longer than the PN532's buffer comes back
in parts, the status byte's MI bit asking for the next (as libnfc's pn53x_transceive does).
InCommunicateThru, which leaves T=CL to the host, is not needed for that.

Why no library: adafruit-circuitpython-pn532 needs Adafruit Blinka (board detection and
CircuitPython shims), sleeps fixed times on every read and has no MI chaining; nfcpy (last
release 1.0.4, March 2022) drives a PN532 on a tty but not on I2C and brings pyusb and libusb1.
The frames are small: a raw tty (termios) or /dev/i2c-N (the I2C_SLAVE ioctl) and select() with a
deadline on every read, so nothing here can wait longer than the transport's timeout.
"""

from __future__ import annotations

import fcntl
import os
import select
import termios
import threading
import time
from dataclasses import dataclass

from agent.chip import transport
from agent.chip.transport import CardLost, ChipError

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
HOST, PN532 = 0xD4, 0xD5                          # TFI: host to PN532, PN532 to host
#: InDataExchange's DataOut sent per frame: a normal frame holds 255 bytes of TFI, command,
#: Tg and data (the PN532 takes up to 262 in an extended frame; normal frames work on every firmware)
MAX_CHUNK = 252
#: a frame from the PN532 longer than this is not one (its buffer is 264 bytes)
MAX_FRAME_DATA = 265
#: the largest answer accepted from a card: an extended-length response and its status word
MAX_RESPONSE = 65536 + 2
I2C_ADDRESS = 0x24
I2C_SLAVE = 0x0703

GET_FIRMWARE_VERSION, SAM_CONFIGURATION, RF_CONFIGURATION = 0x02, 0x14, 0x32
IN_LIST_PASSIVE_TARGET, IN_DATA_EXCHANGE, IN_RELEASE = 0x4A, 0x40, 0x52

#: InDataExchange's status codes (UM0701-02 7.1, table 15), the ones worth a word
STATUS = {
    0x01: "the card did not answer in time", 0x02: "CRC error", 0x03: "parity error",
    0x04: "wrong bit count", 0x05: "framing error", 0x06: "collision", 0x07: "buffer too small",
    0x09: "RF buffer overflow", 0x0A: "RF field not switched on in time", 0x0B: "RF protocol error",
    0x0D: "overheating", 0x0E: "internal buffer overflow", 0x10: "invalid parameter",
    0x13: "DEP format error", 0x25: "invalid DEP state", 0x26: "operation not allowed",
    0x27: "no card selected", 0x29: "card released", 0x2A: "another card", 0x2B: "the card left the field",
    0x2D: "RF over-current",
}


class _Timeout(Exception):
    pass


def frame(data: bytes) -> bytes:
    """A host information frame around `data` (command code and parameters), normal or extended."""
    body = bytes([HOST]) + data
    dcs = (-sum(body)) & 0xFF
    n = len(body)
    if n <= 255:
        return bytes([0x00, 0x00, 0xFF, n, (-n) & 0xFF]) + body + bytes([dcs, 0x00])
    if n > 0xFFFF:
        raise ValueError("a PN532 frame holds at most 65,535 bytes")
    hi, lo = n >> 8, n & 0xFF
    return bytes([0x00, 0x00, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF]) + body + bytes([dcs, 0x00])


# -- links: bytes to and from the PN532 ----------------------------------------------------------
class UartLink:
    """The PN532's HSU on a tty (the Pi's /dev/serial0, or a USB-serial adapter): raw, 115200 8N1."""

    def __init__(self, path: str, baud: int = 115200):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise ChipError(f"cannot open the PN532's serial port {path}: {e.strerror}"
                            + (" (enable the UART: raspi-config, Interface Options, Serial Port)"
                               if e.errno == 2 else "")) from e
        self.path = path
        if os.isatty(self.fd):
            attrs = termios.tcgetattr(self.fd)
            attrs[0] = attrs[1] = attrs[3] = 0
            attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
            attrs[4] = attrs[5] = getattr(termios, f"B{baud}", termios.B115200)
            termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
            termios.tcflush(self.fd, termios.TCIOFLUSH)

    def wake(self, deadline: float) -> None:
        """HSU wake-up (UM0701-02 7.2.11): 0x55 0x55 and zeros, then the first command follows."""
        self.drain()
        self.write(b"\x55\x55" + bytes(14), deadline)

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout()
            _, writable, _ = select.select([], [self.fd], [], left)
            if writable:
                view = view[os.write(self.fd, view):]

    def read(self, n: int, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Timeout()
        readable, _, _ = select.select([self.fd], [], [], left)
        if not readable:
            raise _Timeout()
        data = os.read(self.fd, n)
        if not data:
            raise OSError(5, "the serial port closed")
        return data

    def end_frame(self) -> None:
        pass

    def drain(self) -> None:
        try:
            while select.select([self.fd], [], [], 0)[0] and os.read(self.fd, 512):
                pass
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class I2cLink:
    """The PN532 on I2C (/dev/i2c-N, address 0x24): each read starts with a ready byte
    (UM0701-02 6.2.4); a frame is read whole once the PN532 says it is ready."""

    def __init__(self, path: str, address: int = I2C_ADDRESS, dev=None):
        self.path = path
        if dev is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                fcntl.ioctl(fd, I2C_SLAVE, address)
            except OSError as e:
                raise ChipError(f"cannot open the PN532 on {path}: {e.strerror}"
                                + (" (enable I2C: raspi-config, Interface Options, I2C)" if e.errno == 2 else "")) from e
            dev = _FdDevice(fd)
        self.dev = dev
        self._buf = b""

    def wake(self, deadline: float) -> None:
        pass    # an I2C start condition wakes it

    def write(self, data: bytes, deadline: float) -> None:
        self.dev.write(data)

    def read(self, n: int, deadline: float) -> bytes:
        while not self._buf:
            chunk = self.dev.read(1 + MAX_FRAME_DATA + 11)
            if chunk and chunk[0] & 0x01:
                self._buf = chunk[1:]
                break
            if time.monotonic() >= deadline:
                raise _Timeout()
            time.sleep(0.002)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def end_frame(self) -> None:
        self._buf = b""          # the rest of that read is padding: the next frame is a new read

    def drain(self) -> None:
        self._buf = b""

    def close(self) -> None:
        self.dev.close()


class _FdDevice:
    def __init__(self, fd: int):
        self.fd = fd

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Device:
    bus: str            # "uart" | "i2c"
    path: str
    baud: int = 115200


def parse_device(device: str | None) -> Device:
    """`[chip] device` for a PN532: empty (the Pi's UART, /dev/serial0), a tty path, 'uart:PATH',
    'uart:PATH@BAUD', an I2C bus ('i2c:1', '/dev/i2c-1')."""
    d = (device or "").strip()
    if not d:
        return Device("uart", "/dev/serial0")
    if d.startswith("i2c:"):
        bus = d[4:]
        return Device("i2c", bus if bus.startswith("/") else f"/dev/i2c-{bus}")
    if d.startswith("/dev/i2c-"):
        return Device("i2c", d)
    if d.startswith("uart:"):
        d = d[5:]
    path, _, baud = d.partition("@")
    if baud and not baud.isdigit():
        raise ChipError(f"PN532 device {device!r}: the speed after '@' is a number")
    return Device("uart", path, int(baud) if baud else 115200)


# -- the PN532 ------------------------------------------------------------------------------------
class Pn532Transport:
    """A PN532 with an ISO 14443-4 card in its field as a Transport. The card is found on the
    first transmit (or by wait_for_card) and again after a CardLost."""

    def __init__(self, link, timeout_s: float = 5.0):
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self.link, self.timeout_s = link, timeout_s
        self.firmware: tuple[int, int, int] | None = None
        self.target: bytes | None = None    # the selected card's UID, None without one
        self._lock = threading.Lock()

    @classmethod
    def open(cls, device: str | None = None, timeout_s: float = 5.0) -> "Pn532Transport":
        """Open, wake and configure the PN532; ChipError when nothing answers."""
        d = parse_device(device)
        link = UartLink(d.path, d.baud) if d.bus == "uart" else I2cLink(d.path)
        t = cls(link, timeout_s)
        try:
            t.setup()
        except (CardLost, ChipError) as e:
            link.close()
            raise ChipError(f"no PN532 answers on {d.path} ({d.bus}): {e}") from e
        return t

    def setup(self) -> None:
        """Wake it, normal SAM mode, a few activation retries (never the default: forever)."""
        with self._lock:
            try:
                self.link.wake(time.monotonic() + self.timeout_s)
            except _Timeout:
                raise CardLost("the serial port takes no bytes") from None
            except OSError as e:
                raise CardLost(f"the PN532's link broke: {e.strerror or e}") from e
            self._command(SAM_CONFIGURATION, b"\x01\x14\x00")   # normal mode, 1 s virtual card timeout, no IRQ
            version = self._command(GET_FIRMWARE_VERSION, b"")
            if len(version) < 4:
                raise ChipError(f"a short firmware version ({version.hex()})")
            ic, ver, rev = version[:3]
            if ic != 0x32:
                raise ChipError(f"not a PN532 (IC 0x{ic:02X})")
            self.firmware = (ic, ver, rev)
            # MaxRetries: ATR_REQ 0xFF (default), PSL 1, passive activation 2 (default 0xFF: forever)
            self._command(RF_CONFIGURATION, b"\x05\xFF\x01\x02")

    # -- frames -----------------------------------------------------------------------------------
    def _command(self, code: int, params: bytes, timeout_s: float | None = None) -> bytes:
        """One command: the frame, its ACK, the answer (without TFI and code). Lock held."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        try:
            self.link.write(frame(bytes([code]) + params), deadline)
            for _ in range(2):
                got = self._read_frame(deadline)
                if got == "ack":
                    break
                if got == "nack":      # it asks for the frame again
                    self.link.write(frame(bytes([code]) + params), deadline)
                    continue
                raise CardLost(f"PN532: an answer where its ACK belongs (command 0x{code:02X})")
            else:
                raise CardLost("PN532: no ACK")
            answer = self._read_frame(deadline)
        except _Timeout:
            self._abort()
            raise CardLost(f"no answer from the PN532 within {timeout_s or self.timeout_s:g} s "
                           f"(command 0x{code:02X})") from None
        except OSError as e:
            raise CardLost(f"the PN532's link broke: {e.strerror or e}") from e
        if not isinstance(answer, bytes):
            raise CardLost(f"PN532: {answer} where an answer belongs")
        if answer[:1] == b"\x7F":
            raise ChipError(f"PN532: syntax error in command 0x{code:02X}")
        if len(answer) < 2 or answer[0] != PN532 or answer[1] != code + 1:
            raise CardLost(f"PN532: an answer to another command ({answer[:2].hex()} for 0x{code:02X})")
        return answer[2:]

    def _abort(self) -> None:
        """An ACK from the host aborts the PN532's current command (UM0701-02 6.2.1.3)."""
        try:
            self.link.write(ACK, time.monotonic() + 0.1)
        except (_Timeout, OSError):
            pass
        self.link.drain()

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = b""
        while len(buf) < n:
            buf += self.link.read(n - len(buf), deadline)
        return buf

    def _read_frame(self, deadline: float) -> bytes | str:
        """"ack", "nack", or an information frame's TFI and data (checksums checked)."""
        prev = None
        scanned = 0
        while True:                                  # the start code 00 FF, skipping what is before
            b = self._read_exact(1, deadline)[0]
            if prev == 0x00 and b == 0xFF:
                break
            prev = b
            scanned += 1
            if scanned > 4 * MAX_FRAME_DATA:
                raise CardLost("PN532: no frame in the bytes it sent")
        a, b = self._read_exact(2, deadline)
        if (a, b) == (0x00, 0xFF):
            self.link.end_frame()
            return "ack"
        if (a, b) == (0xFF, 0x00):
            self.link.end_frame()
            return "nack"
        if (a, b) == (0xFF, 0xFF):
            hi, lo, lcs = self._read_exact(3, deadline)
            n = hi << 8 | lo
            if (hi + lo + lcs) & 0xFF:
                raise CardLost("PN532: bad extended length checksum")
        else:
            n, lcs = a, b
            if (n + lcs) & 0xFF:
                raise CardLost("PN532: bad length checksum")
        if not 1 <= n <= MAX_FRAME_DATA:
            raise CardLost(f"PN532: a frame of {n} bytes")
        body = self._read_exact(n + 1, deadline)
        self.link.end_frame()
        if sum(body) & 0xFF:
            raise CardLost("PN532: bad data checksum")
        return body[:-1]

    # -- the card ---------------------------------------------------------------------------------
    def _select(self) -> None:
        """InListPassiveTarget: an ISO 14443-4 card of type A, else of type B (the PN532 sends RATS
        or ATTRIB itself). CardLost when there is none."""
        for brty, init in ((0x00, b""), (0x03, b"\x00")):          # 106 kbps type A; type B, AFI 0
            answer = self._command(IN_LIST_PASSIVE_TARGET, bytes([1, brty]) + init)
            if not answer or answer[0] == 0:
                continue
            if brty == 0x00:
                if len(answer) < 6 or len(answer) < 6 + answer[5]:
                    raise CardLost("PN532: a short InListPassiveTarget answer")
                sak, uid = answer[4], answer[6:6 + answer[5]]
                if not sak & 0x20:
                    self._command(IN_RELEASE, b"\x00")
                    raise ChipError(f"the card is not an ISO 14443-4 card (SAK 0x{sak:02X}): not a chip ID")
            else:
                uid = answer[3:7] if len(answer) >= 7 else b""
            self.target = bytes(uid)
            return
        raise CardLost("no card on the reader")

    def transmit(self, apdu: bytes) -> bytes:
        """One APDU to the card and its answer (data + SW1 SW2); CardLost when it went away."""
        if not 4 <= len(apdu) <= 4 + 3 + 65535 + 3:
            raise ValueError(f"an APDU has 4 to 65,545 bytes, not {len(apdu)}")
        with self._lock:
            if self.target is None:
                self._select()
            try:
                chunks = [apdu[i:i + MAX_CHUNK] for i in range(0, len(apdu), MAX_CHUNK)]
                for i, chunk in enumerate(chunks):
                    more = i < len(chunks) - 1
                    answer = self._exchange(bytes([0x01 | (0x40 if more else 0)]) + chunk)
                    if more and (len(answer) > 1 or answer[0] & 0x40):
                        raise CardLost("PN532: the card answered before the whole command was sent")
                out = bytearray(answer[1:])
                while answer[0] & 0x40:                               # MI: more of the answer
                    answer = self._exchange(b"\x01")
                    out += answer[1:]
                    if len(out) > MAX_RESPONSE:
                        raise CardLost(f"the card's answer is longer than {MAX_RESPONSE} bytes")
            except CardLost:
                self.target = None
                raise
            if len(out) < 2:
                self.target = None
                raise CardLost(f"the card answered {len(out)} bytes, not even a status word")
            return bytes(out)

    def _exchange(self, params: bytes) -> bytes:
        answer = self._command(IN_DATA_EXCHANGE, params)
        if not answer:
            raise CardLost("PN532: an empty InDataExchange answer")
        code = answer[0] & 0x3F
        if code:
            raise CardLost(f"PN532: {STATUS.get(code, 'error')} (status 0x{code:02X})")
        return answer

    def wait_for_card(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """True once an ISO 14443-4 card is in the field (then selected), False after timeout_s."""
        with self._lock:
            return transport.wait_for_card(lambda: self.target is not None, self._select, timeout_s, poll_s)

    def close(self) -> None:
        """Release the card (best effort) and close the port."""
        with self._lock:
            if self.target is not None:
                try:
                    self._command(IN_RELEASE, b"\x00", timeout_s=min(self.timeout_s, 0.5))
                except (CardLost, ChipError):
                    pass
                self.target = None
            self.link.close()

    def __enter__(self) -> "Pn532Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader_check(device: str | None, timeout_s: float = 2.0) -> tuple[bool, str]:
    """doctor's line for a PN532: the port opens and the chip answers with its firmware version."""
    try:
        t = Pn532Transport.open(device, timeout_s)
    except ChipError as e:
        return False, str(e)
    try:
        _, ver, rev = t.firmware
        return True, f"PN532 firmware {ver}.{rev} on {t.link.path}"
    finally:
        t.close()
