"""AES secure messaging after PACE (ICAO Doc 9303 Part 11, 9.8; AES variant 9.8.6-9.8.7).

Every APDU after PACE goes through this: the command's data enciphered in DO'87' (with the 01
padding-content indicator; DO'85' without it for an odd INS), Le in DO'97', and an 8-byte
AES-CMAC of SSC || padded header || DOs in DO'8E'; the answer as DO'87', DO'99' (status) and
DO'8E'. The send sequence counter SSC is 16 bytes, incremented before each command and each
answer; the IV of each encryption is E(KSenc, SSC) (9.8.6.1). The MAC input is padded
(ISO/IEC 9797-1 method 2) before the CMAC as for 3DES (9.8.6.2): cards refuse unpadded input.

`AesSM` implements the `SecureMessaging` protocol of agent/chip/sm.py for the terminal (`wrap`,
`unwrap`) and also offers the card's half for the simulated chip, with the signatures of sm.py's
SMBase (`unwrap_command(apdu) -> (header, data, Le)`, `wrap_response(data, sw)`). Every card answer is hostile: lengths are checked against the bytes that are there before
they are used, and anything wrong raises `SmError` (never an IndexError or a cryptography error).
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from agent.chip.sm import build_apdu

BLOCK = 16
MAC_LEN = 8
MAX_APDU = 65544        # an extended APDU: 4 header + 3 Lc + 65535 data + 2 Le


class SmError(ValueError):
    """A secure-messaging failure: a wrong MAC, a malformed or unexpected data object, bad padding.
    A ValueError (a bad value from the card): agent/chip's readers and the simulated chip catch
    ChipError and ValueError, so this needs no import of their modules."""


def _pad(data: bytes) -> bytes:
    """ISO/IEC 9797-1 padding method 2 (80 00..) to a multiple of the AES block."""
    data = data + b"\x80"
    return data + bytes(-len(data) % BLOCK)


def _unpad(data: bytes) -> bytes:
    """Strict inverse of _pad: the padding is 80 00.. within the last block, nothing else."""
    if not data or len(data) % BLOCK:
        raise SmError("enciphered data is not a whole number of AES blocks")
    end = len(data.rstrip(b"\x00"))
    if end == 0 or data[end - 1] != 0x80 or len(data) - end >= BLOCK:
        raise SmError("bad padding in the enciphered data")
    return data[:end - 1]


def _ber_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return bytes([0x82, n >> 8, n & 0xFF])
    raise SmError("data object too long for secure messaging")


def _do(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(value)) + value


def read_objects(data: bytes, *, max_items: int = 8, allowed: set[int] | None = None,
                 error: type[Exception] = SmError, what: str = "secure-messaging data object") -> list[tuple[int, bytes]]:
    """One-byte-tag data objects in sequence (secure messaging, PACE's dynamic authentication data),
    each length (short, 81, 82) checked against what remains before it is used; `error` is raised."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(data)
    while i < n:
        if len(out) >= max_items:
            raise error(f"too many {what}s")
        tag = data[i]
        if allowed is not None and tag not in allowed:
            raise error(f"unexpected {what} {tag:02X}")
        if tag & 0x1F == 0x1F:
            raise error(f"unexpected multi-byte tag {tag:02X}")
        if i + 1 >= n:
            raise error(f"{what} without a length")
        first = data[i + 1]
        i += 2
        if first < 0x80:
            length = first
        elif first in (0x81, 0x82):
            width = first - 0x80
            if i + width > n:
                raise error(f"truncated length of a {what}")
            length = int.from_bytes(data[i:i + width], "big")
            i += width
        else:
            raise error(f"bad length of a {what}")
        if length > n - i:
            raise error(f"{what} longer than the data")
        out.append((tag, data[i:i + length]))
        i += length
    return out


def _read_dos(body: bytes, allowed: set[int]) -> list[tuple[int, bytes]]:
    return read_objects(body, allowed=allowed)


def _split(dos: list[tuple[int, bytes]], order: list[int], required: set[int]) -> dict[int, bytes]:
    """The DOs must come in `order`, each at most once; `required` ones must be there."""
    found: dict[int, bytes] = {}
    pos = 0
    for tag, value in dos:
        while pos < len(order) and order[pos] != tag:
            pos += 1
        if pos == len(order):
            raise SmError(f"secure-messaging data object {tag:02X} out of order or repeated")
        found[tag] = value
        pos += 1
    missing = required - found.keys()
    if missing:
        raise SmError("secure-messaging data object " + "/".join(f"{t:02X}" for t in sorted(missing))
                      + " missing")
    return found


def parse_apdu(apdu: bytes) -> tuple[bytes, bytes, int | None, bool]:
    """(header, data, Le or None, extended) of a plain command APDU, cases 1-4 short and extended
    (ISO/IEC 7816-3 12.1). Le is the number of bytes asked for (256 / 65536 for 00 / 0000)."""
    n = len(apdu)
    if n < 4 or n > MAX_APDU:
        raise SmError(f"not a command APDU ({n} bytes)")
    header = apdu[:4]
    if n == 4:
        return header, b"", None, False
    if n == 5:
        return header, b"", apdu[4] or 256, False
    if apdu[4] != 0:
        lc = apdu[4]
        if n == 5 + lc:
            return header, apdu[5:], None, False
        if n == 6 + lc:
            return header, apdu[5:-1], apdu[-1] or 256, False
        raise SmError("command APDU length does not match its Lc")
    if n == 7:
        return header, b"", int.from_bytes(apdu[5:7], "big") or 65536, True
    lc = int.from_bytes(apdu[5:7], "big")
    if lc == 0:
        raise SmError("extended command APDU with Lc 0")
    if n == 7 + lc:
        return header, apdu[7:], None, True
    if n == 9 + lc:
        return header, apdu[7:-2], int.from_bytes(apdu[-2:], "big") or 65536, True
    raise SmError("extended command APDU length does not match its Lc")


class AesSM:
    """ICAO 9303-11 9.8 secure messaging with AES keys of 16, 24 or 32 bytes (PACE session keys)."""

    def __init__(self, ks_enc: bytes, ks_mac: bytes, ssc: int | bytes = 0) -> None:
        if len(ks_enc) not in (16, 24, 32) or len(ks_mac) not in (16, 24, 32):
            raise ValueError("AES session keys are 16, 24 or 32 bytes")
        self._enc_key = bytes(ks_enc)
        self._mac_key = bytes(ks_mac)
        if isinstance(ssc, (bytes, bytearray)):
            if len(ssc) != BLOCK:
                raise ValueError("the AES send sequence counter is 16 bytes")
            ssc = int.from_bytes(ssc, "big")
        self.ssc = ssc % (1 << 128)

    # -- primitives ------------------------------------------------------------------------
    def _next_ssc(self) -> bytes:
        self.ssc = (self.ssc + 1) % (1 << 128)
        return self.ssc.to_bytes(BLOCK, "big")

    def _iv(self, ssc: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self._enc_key), modes.ECB()).encryptor()
        return enc.update(ssc) + enc.finalize()

    def _encrypt(self, ssc: bytes, data: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self._enc_key), modes.CBC(self._iv(ssc))).encryptor()
        return enc.update(_pad(data)) + enc.finalize()

    def _decrypt(self, ssc: bytes, cryptogram: bytes) -> bytes:
        if not cryptogram or len(cryptogram) % BLOCK:
            raise SmError("enciphered data is not a whole number of AES blocks")
        dec = Cipher(algorithms.AES(self._enc_key), modes.CBC(self._iv(ssc))).decryptor()
        return _unpad(dec.update(cryptogram) + dec.finalize())

    def _mac(self, ssc: bytes, data: bytes) -> bytes:
        c = cmac.CMAC(algorithms.AES(self._mac_key))
        c.update(_pad(ssc + data))
        return c.finalize()[:MAC_LEN]

    def _check_mac(self, ssc: bytes, data: bytes, mac: bytes) -> None:
        if not hmac.compare_digest(self._mac(ssc, data), mac):
            raise SmError("wrong secure-messaging MAC")

    @staticmethod
    def _data_do(ins: int, cryptogram: bytes) -> bytes:
        """DO'87' (01 = padded) for an even INS, DO'85' for an odd one (9.8.5)."""
        if ins & 1:
            return _do(0x85, cryptogram)
        return _do(0x87, b"\x01" + cryptogram)

    # -- terminal side (sm.SecureMessaging) ---------------------------------------------------
    def wrap(self, apdu: bytes) -> bytes:
        """Protect a plain command APDU (CLA gets the SM bits 0C; Le becomes 00 / 0000)."""
        header, data, le, extended = parse_apdu(bytes(apdu))
        if header[0] & 0x0C:
            raise SmError("command APDU is already secure-messaging")
        header = bytes([header[0] | 0x0C]) + header[1:]
        ssc = self._next_ssc()
        do87 = self._data_do(header[1], self._encrypt(ssc, data)) if data else b""
        do97 = b""
        if le is not None:
            do97 = _do(0x97, (le % 65536).to_bytes(2, "big") if extended else bytes([le % 256]))
        mac = self._mac(ssc, _pad(header) + do87 + do97)
        body = do87 + do97 + _do(0x8E, mac)
        return build_apdu(header, body, 65536 if extended or len(body) > 255 else 256, extended)

    def unwrap(self, response: bytes) -> bytes:
        """Check and open a protected answer: returns its plain data + SW1 SW2 (from DO'99').

        A bare status word (no data objects) that is not 9000 is passed on as it is: a card answers
        an error it met before secure messaging that way (an error is only an error); a bare 9000
        is refused, as a success must carry a MAC."""
        response = bytes(response)
        if len(response) < 2:
            raise SmError("answer shorter than a status word")
        ssc = self._next_ssc()
        body, sw = response[:-2], response[-2:]
        if not body:
            if sw == b"\x90\x00":
                raise SmError("success answer without secure messaging")
            return sw
        found = _split(_read_dos(body, {0x85, 0x87, 0x99, 0x8E}), [0x85, 0x87, 0x99, 0x8E], {0x99, 0x8E})
        if 0x85 in found and 0x87 in found:
            raise SmError("answer with both DO'85' and DO'87'")
        if len(found[0x99]) != 2:
            raise SmError("DO'99' is not a status word")
        if len(found[0x8E]) != MAC_LEN:
            raise SmError("DO'8E' is not 8 bytes")
        covered = body[:len(body) - (2 + MAC_LEN)]
        if not body.endswith(b"\x8E\x08" + found[0x8E]):
            raise SmError("DO'8E' is not last in the answer")
        self._check_mac(ssc, covered, found[0x8E])
        plain = b""
        if 0x87 in found:
            value = found[0x87]
            if not value or value[0] != 0x01:
                raise SmError("DO'87' without the 01 padding indicator")
            plain = self._decrypt(ssc, value[1:])
        elif 0x85 in found:
            plain = self._decrypt(ssc, found[0x85])
        return plain + found[0x99]

    # -- card side (the simulated chip) -----------------------------------------------------------
    def unwrap_command(self, apdu: bytes) -> tuple[bytes, bytes, int | None]:
        """The card's half: check and open a protected command APDU -> (plain header, data, Le)."""
        header, body, _le, _extended = parse_apdu(bytes(apdu))
        if header[0] & 0x0C != 0x0C:
            raise SmError("command APDU is not secure-messaging")
        ssc = self._next_ssc()
        found = _split(_read_dos(body, {0x85, 0x87, 0x97, 0x8E}), [0x85, 0x87, 0x97, 0x8E], {0x8E})
        if 0x85 in found and 0x87 in found:
            raise SmError("command with both DO'85' and DO'87'")
        if len(found[0x8E]) != MAC_LEN or not body.endswith(b"\x8E\x08" + found[0x8E]):
            raise SmError("DO'8E' is not an 8-byte MAC at the end of the command")
        self._check_mac(ssc, _pad(header) + body[:len(body) - (2 + MAC_LEN)], found[0x8E])
        data = b""
        if 0x87 in found:
            value = found[0x87]
            if not value or value[0] != 0x01:
                raise SmError("DO'87' without the 01 padding indicator")
            data = self._decrypt(ssc, value[1:])
        elif 0x85 in found:
            data = self._decrypt(ssc, found[0x85])
        le = None
        if 0x97 in found:
            raw = found[0x97]
            if len(raw) not in (1, 2):
                raise SmError("DO'97' is not 1 or 2 bytes")
            le = int.from_bytes(raw, "big") or (256 if len(raw) == 1 else 65536)
        return bytes([header[0] & ~0x0C & 0xFF]) + header[1:], data, le

    def wrap_response(self, data: bytes, sw: bytes) -> bytes:
        """The card's half: protect a plain answer (its data and SW1 SW2)."""
        if len(sw) != 2:
            raise SmError("a status word is 2 bytes")
        data, sw = bytes(data), bytes(sw)
        ssc = self._next_ssc()
        do87 = _do(0x87, b"\x01" + self._encrypt(ssc, data)) if data else b""
        do99 = _do(0x99, sw)
        return do87 + do99 + _do(0x8E, self._mac(ssc, do87 + do99)) + sw
