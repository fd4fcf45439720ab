"""Basic Access Control (ICAO Doc 9303-11 section 4.3): keys from the MRZ's document number, birth
date and expiry, a 3DES mutual authentication, then 3DES secure messaging. For a CCCD the
document number is the last 9 digits of the 12-digit ID."""

from __future__ import annotations

import hashlib
import hmac
import os

from agent.chip.sm import DesSM, SMError, des3_decrypt, des3_encrypt, retail_mac
from agent.chip.transport import ChipError, Transport

_WEIGHTS = (7, 3, 1)


class AccessDenied(ChipError):
    """The card refused the keys (6300 / 6982 to EXTERNAL or MUTUAL AUTHENTICATE)."""


def check_digit(text: str) -> str:
    """ICAO 9303-3 4.9: digits as themselves, A-Z as 10-35, '<' as 0, weights 7 3 1 mod 10."""
    total = 0
    for i, ch in enumerate(text):
        if ch.isdigit():
            v = int(ch)
        elif "A" <= ch <= "Z":
            v = ord(ch) - 55
        elif ch == "<":
            v = 0
        else:
            raise ValueError(f"not an MRZ character: {ch!r}")
        total += v * _WEIGHTS[i % 3]
    return str(total % 10)


def mrz_info(doc_number: str, birth_yymmdd: str, expiry_yymmdd: str) -> str:
    """The MRZ information the keys come from (9303-11 4.3.2; document number padded with '<'
    to 9 characters, each field followed by its check digit)."""
    doc = doc_number.upper().ljust(9, "<")
    for f, n in ((birth_yymmdd, 6), (expiry_yymmdd, 6)):
        if len(f) != n or not f.isdigit():
            raise ValueError("dates must be YYMMDD")
    return (doc + check_digit(doc) + birth_yymmdd + check_digit(birth_yymmdd)
            + expiry_yymmdd + check_digit(expiry_yymmdd))


def kseed(info: str) -> bytes:
    """Kseed = the first 16 bytes of SHA-1(MRZ information) (9303-11 4.3.2)."""
    return hashlib.sha1(info.encode("ascii")).digest()[:16]


def _des_parity(key: bytes) -> bytes:
    out = bytearray()
    for b in key:
        b &= 0xFE
        out.append(b | (bin(b).count("1") + 1) % 2)
    return bytes(out)


def derive_key(seed: bytes, counter: int, cipher: str = "3des") -> bytes:
    """KDF of 9303-11 9.7.1: counter 1 for KSenc, 2 for KSmac, 3 for the PACE password key.
    3des: SHA-1, 16 bytes with DES parity; aes128: SHA-1[:16]; aes192/aes256: SHA-256."""
    d = seed + counter.to_bytes(4, "big")
    if cipher == "3des":
        return _des_parity(hashlib.sha1(d).digest()[:16])
    if cipher == "aes128":
        return hashlib.sha1(d).digest()[:16]
    if cipher == "aes192":
        return hashlib.sha256(d).digest()[:24]
    if cipher == "aes256":
        return hashlib.sha256(d).digest()
    raise ValueError(f"unknown cipher {cipher}")


def _sw(resp: bytes) -> bytes:
    if len(resp) < 2:
        raise ChipError("answer shorter than a status word")
    return resp[-2:]


def bac(transport: Transport, info: str, *, rnd_ifd: bytes | None = None,
        k_ifd: bytes | None = None) -> DesSM:
    """Runs BAC (GET CHALLENGE, EXTERNAL AUTHENTICATE) and returns the session's DesSM.
    Raises AccessDenied for refused keys, ChipError for answers that make no sense."""
    seed = kseed(info)
    k_enc, k_mac = derive_key(seed, 1), derive_key(seed, 2)
    resp = transport.transmit(b"\x00\x84\x00\x00\x08")
    if _sw(resp) != b"\x90\x00" or len(resp) != 10:
        raise ChipError(f"GET CHALLENGE answered {resp[-2:].hex()} ({len(resp)} bytes)")
    rnd_ic = resp[:8]
    rnd_ifd = rnd_ifd or os.urandom(8)
    k_ifd = k_ifd or os.urandom(16)
    e_ifd = des3_encrypt(k_enc, rnd_ifd + rnd_ic + k_ifd)
    m_ifd = retail_mac(k_mac, e_ifd)
    resp = transport.transmit(b"\x00\x82\x00\x00\x28" + e_ifd + m_ifd + b"\x28")
    sw = _sw(resp)
    if sw in (b"\x63\x00", b"\x69\x82", b"\x69\x85", b"\x69\x88") or sw[0] == 0x63:
        raise AccessDenied(f"the card refused the BAC keys ({sw.hex()})")
    if sw != b"\x90\x00" or len(resp) != 42:
        raise ChipError(f"EXTERNAL AUTHENTICATE answered {sw.hex()} ({len(resp)} bytes)")
    e_ic, m_ic = resp[:32], resp[32:40]
    if not hmac.compare_digest(m_ic, retail_mac(k_mac, e_ic)):
        raise SMError("the card's BAC answer MAC does not verify")
    r = des3_decrypt(k_enc, e_ic)
    if r[:8] != rnd_ic or r[8:16] != rnd_ifd:
        raise SMError("the card's BAC answer does not echo the challenges")
    k_ic = r[16:32]
    seed = bytes(a ^ b for a, b in zip(k_ifd, k_ic))
    return DesSM(derive_key(seed, 1), derive_key(seed, 2), rnd_ic[4:] + rnd_ifd[4:])
