"""Secure messaging (ICAO Doc 9303-11 section 9.8): every APDU after BAC or PACE is encrypted and
MACed, with a send sequence counter (SSC) that both sides step once per command and once per
response.

`SMBase` holds the message format once (DO87 encrypted data, DO97 Le, DO99 status, DO8E MAC) for
both directions (`wrap`/`unwrap` for the terminal, `unwrap_command`/`wrap_response` for the
simulated chip); a cipher suite only supplies `encrypt`, `decrypt` and `mac` over the current
SSC: `DesSM` here (BAC, 3DES + ISO 9797-1 MAC algorithm 3), AES in sm_aes.py (PACE)."""

from __future__ import annotations

import hmac
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from agent.chip.transport import ChipError


class SMError(ChipError):
    """A protected answer that does not verify or cannot be read: the session is over."""


class SecureMessaging(Protocol):
    def wrap(self, apdu: bytes) -> bytes:
        """A plain command APDU -> the protected one to send."""
        ...

    def unwrap(self, response: bytes) -> bytes:
        """A protected response (data + SW) -> the plain data + SW; raises SMError."""
        ...


def pad(data: bytes, block: int = 8) -> bytes:
    """ISO/IEC 9797-1 padding method 2: 0x80 then zeros to a whole block."""
    data = data + b"\x80"
    return data + b"\x00" * (-len(data) % block)


def unpad(data: bytes) -> bytes:
    i = data.rfind(b"\x80")
    if i < 0 or data[i + 1:].strip(b"\x00"):
        raise SMError("bad padding")
    return data[:i]


def _des(key: bytes, data: bytes, encrypt: bool, iv: bytes = b"\x00" * 8) -> bytes:
    key = key * 3 if len(key) == 8 else key + key[:8] if len(key) == 16 else key   # 24-byte form
    c = Cipher(TripleDES(key), modes.CBC(iv))
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


def des3_encrypt(key: bytes, data: bytes) -> bytes:
    """2-key 3DES CBC with a zero IV (ICAO 9303-11 9.8.6.1)."""
    return _des(key, data, True)


def des3_decrypt(key: bytes, data: bytes) -> bytes:
    return _des(key, data, False)


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO/IEC 9797-1 MAC algorithm 3 (DES CBC with Ka, the last block through 3DES Ka Kb Ka);
    data is padded here (method 2)."""
    data = pad(data)
    ka = key[:8]
    last = data[-8:]
    if len(data) > 8:
        h = _des(ka, data[:-8], True)[-8:]
        last = bytes(a ^ b for a, b in zip(h, last))
    return _des(key[:16], last, True)


def _lv(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


def split_apdu(apdu: bytes) -> tuple[bytes, bytes, int | None, bool]:
    """(header, data, Le or None, extended) of a plain command APDU (ISO 7816-4 cases 1-4)."""
    if len(apdu) < 4:
        raise ChipError("APDU shorter than its header")
    h, body = apdu[:4], apdu[4:]
    if not body:
        return h, b"", None, False
    if len(body) == 1:
        return h, b"", body[0] or 256, False
    if body[0] == 0 and len(body) >= 3:                      # extended length
        if len(body) == 3:
            return h, b"", int.from_bytes(body[1:3], "big") or 65536, True
        lc = int.from_bytes(body[1:3], "big")
        data, rest = body[3:3 + lc], body[3 + lc:]
        if len(data) != lc or len(rest) not in (0, 2):
            raise ChipError("malformed extended APDU")
        le = (int.from_bytes(rest, "big") or 65536) if rest else None
        return h, data, le, True
    lc = body[0]
    data, rest = body[1:1 + lc], body[1 + lc:]
    if len(data) != lc or len(rest) > 1:
        raise ChipError("malformed APDU")
    return h, data, (rest[0] or 256) if rest else None, False


def build_apdu(h: bytes, data: bytes, le: int | None, extended: bool = False) -> bytes:
    """A plain command APDU; extended length when asked or when data/Le need it."""
    extended = extended or len(data) > 255 or (le is not None and le > 256)
    out = bytearray(h)
    if extended:
        if data:
            out += b"\x00" + len(data).to_bytes(2, "big") + data
        if le is not None:
            out += (b"" if data else b"\x00") + (le % 65536).to_bytes(2, "big")
    else:
        if data:
            out += bytes([len(data)]) + data
        if le is not None:
            out += bytes([le % 256])
    return bytes(out)


class SMBase:
    """The ICAO 9303-11 9.8 message format over an abstract cipher suite."""

    block = 8
    ssc: int

    def ssc_bytes(self) -> bytes:
        return self.ssc.to_bytes(self.block, "big")

    # the cipher suite: each with the current SSC
    def encrypt(self, data: bytes) -> bytes:
        raise NotImplementedError

    def decrypt(self, data: bytes) -> bytes:
        raise NotImplementedError

    def mac(self, data: bytes) -> bytes:
        """8-byte MAC of data (the suite pads as it must)."""
        raise NotImplementedError

    def _step(self) -> None:
        self.ssc = (self.ssc + 1) % (1 << (8 * self.block))

    # terminal side
    def wrap(self, apdu: bytes) -> bytes:
        h, data, le, extended = split_apdu(apdu)
        h = bytes([h[0] | 0x0C]) + h[1:]
        self._step()
        body = b""
        if data:
            if h[1] & 1:
                raise ChipError("odd INS (DO85) is not used here")
            enc = b"\x01" + self.encrypt(pad(data, self.block))
            body += b"\x87" + _lv(len(enc)) + enc
        if le is not None:
            lb = (le % 256).to_bytes(1, "big") if not extended and le <= 256 else (le % 65536).to_bytes(2, "big")
            body += b"\x97" + _lv(len(lb)) + lb
        cc = self.mac(self.ssc_bytes() + pad(h, self.block) + body)
        body += b"\x8e\x08" + cc
        return build_apdu(h, body, 65536 if extended else 256, extended)

    def unwrap(self, response: bytes) -> bytes:
        if len(response) < 2:
            raise SMError("answer shorter than a status word")
        self._step()
        data, sw = response[:-2], response[-2:]
        if not data:
            # an error answered without SM objects: the card ended the session (9303-11 9.8.4)
            if sw == b"\x90\x00":
                raise SMError("unprotected success answer")
            return sw
        do87, do99, cc, macced = b"", None, None, b""
        pos = 0
        while pos < len(data):
            tag = data[pos]
            if pos + 1 >= len(data):
                raise SMError("truncated SM object")
            n, lpos = data[pos + 1], pos + 2
            if n & 0x80:
                k = n & 0x7F
                if k not in (1, 2) or lpos + k > len(data):
                    raise SMError("bad SM length")
                n = int.from_bytes(data[lpos:lpos + k], "big")
                lpos += k
            if lpos + n > len(data):
                raise SMError("SM object past the answer")
            value = data[lpos:lpos + n]
            if tag == 0x87:
                do87 = value
            elif tag == 0x99:
                do99 = value
            elif tag == 0x8E:
                cc = value
            else:
                raise SMError(f"unexpected SM object {tag:02X}")
            if tag != 0x8E:
                macced += data[pos:lpos + n]
            pos = lpos + n
        if cc is None or do99 is None or len(do99) != 2:
            raise SMError("answer without MAC or status")
        if not hmac.compare_digest(cc, self.mac(self.ssc_bytes() + macced)):
            raise SMError("answer MAC does not verify")
        plain = b""
        if do87:
            if do87[0] != 1 or (len(do87) - 1) % self.block:
                raise SMError("bad encrypted data object")
            plain = unpad(self.decrypt(do87[1:]))
        return plain + do99

    # card side (the simulated chip)
    def unwrap_command(self, apdu: bytes) -> tuple[bytes, bytes, int | None]:
        """A protected command -> (plain header, data, Le); raises SMError."""
        h, body, _, _ = split_apdu(apdu)
        self._step()
        do87, do97, cc, macced = b"", None, None, b""
        pos = 0
        while pos < len(body):
            tag, n = body[pos], body[pos + 1] if pos + 1 < len(body) else 0
            lpos = pos + 2
            if n & 0x80:
                k = n & 0x7F
                n = int.from_bytes(body[lpos:lpos + k], "big")
                lpos += k
            value = body[lpos:lpos + n]
            if tag == 0x87:
                do87 = value
            elif tag == 0x97:
                do97 = value
            elif tag == 0x8E:
                cc = value
            if tag != 0x8E:
                macced += body[pos:lpos + n]
            pos = lpos + n
        if cc is None or cc != self.mac(self.ssc_bytes() + pad(h, self.block) + macced):
            raise SMError("command MAC does not verify")
        data = unpad(self.decrypt(do87[1:])) if do87 else b""
        le = None if do97 is None else (int.from_bytes(do97, "big") or (256 if len(do97) == 1 else 65536))
        return bytes([h[0] & ~0x0C & 0xFF]) + h[1:], data, le

    def wrap_response(self, data: bytes, sw: bytes) -> bytes:
        self._step()
        body = b""
        if data:
            enc = b"\x01" + self.encrypt(pad(data, self.block))
            body += b"\x87" + _lv(len(enc)) + enc
        body += b"\x99\x02" + sw
        return body + b"\x8e\x08" + self.mac(self.ssc_bytes() + body) + sw


class DesSM(SMBase):
    """BAC secure messaging: 2-key 3DES CBC (zero IV), retail MAC, 8-byte SSC."""

    block = 8

    def __init__(self, ks_enc: bytes, ks_mac: bytes, ssc: bytes | int):
        self.ks_enc, self.ks_mac = ks_enc, ks_mac
        self.ssc = int.from_bytes(ssc, "big") if isinstance(ssc, bytes) else ssc

    def encrypt(self, data: bytes) -> bytes:
        return des3_encrypt(self.ks_enc, data)

    def decrypt(self, data: bytes) -> bytes:
        return des3_decrypt(self.ks_enc, data)

    def mac(self, data: bytes) -> bytes:
        return retail_mac(self.ks_mac, data)
