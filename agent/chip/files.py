"""Selecting the eMRTD applet and reading its elementary files (ICAO Doc 9303-10 section 3.6 and
ISO 7816-4): SELECT by AID / FID, READ BINARY in chunks, through secure messaging when there is
a session. A file's size comes from its first TLV header and is checked against `max_bytes`
before anything is read or allocated; a card that returns nothing, or more than it was asked,
is refused rather than looped on."""

from __future__ import annotations

from agent.chip import tlv
from agent.chip.sm import SecureMessaging
from agent.chip.transport import ChipError, Transport

APPLET_AID = bytes.fromhex("A0000002471001")
FID_CARD_ACCESS = 0x011C
FID_COM = 0x011E
FID_SOD = 0x011D
DG_FID = {n: 0x0100 + n for n in range(1, 17)}
# a short-APDU chunk under 3DES SM: 223 data bytes -> 224 encrypted + objects <= 256
SHORT_CHUNK = 0xDF
# READ BINARY with an even INS addresses offsets up to 32767 (P1 bit 8 is the SFI flag)
MAX_EVEN_OFFSET = 0x7FFF


class FileNotFound(ChipError):
    """6A82: the card has no such file (an optional data group)."""


class TooLarge(ChipError):
    """The file's header claims more than this terminal reads of it (checked before reading)."""


class Denied(ChipError):
    """6982: the file needs an access the session does not have."""


def send(transport: Transport, sm: SecureMessaging | None, apdu: bytes) -> tuple[bytes, bytes]:
    """(data, SW) of one command, protected when there is a session."""
    resp = transport.transmit(sm.wrap(apdu) if sm else apdu)
    if sm:
        resp = sm.unwrap(resp)
    if len(resp) < 2:
        raise ChipError("answer shorter than a status word")
    return resp[:-2], resp[-2:]


def _check(sw: bytes, what: str) -> None:
    if sw == b"\x90\x00":
        return
    if sw == b"\x6a\x82":
        raise FileNotFound(f"{what}: no such file")
    if sw == b"\x69\x82":
        raise Denied(f"{what}: security status not satisfied")
    raise ChipError(f"{what}: the card answered {sw.hex().upper()}")


def select_applet(transport: Transport, sm: SecureMessaging | None = None) -> None:
    _, sw = send(transport, sm, b"\x00\xa4\x04\x0c" + bytes([len(APPLET_AID)]) + APPLET_AID)
    _check(sw, "SELECT eMRTD applet")


def select_ef(transport: Transport, sm: SecureMessaging | None, fid: int) -> None:
    _, sw = send(transport, sm, b"\x00\xa4\x02\x0c\x02" + fid.to_bytes(2, "big"))
    _check(sw, f"SELECT {fid:04X}")


def read_binary(transport: Transport, sm: SecureMessaging | None, offset: int, n: int) -> bytes:
    if not 0 <= offset <= MAX_EVEN_OFFSET:
        raise ChipError(f"offset {offset} beyond what READ BINARY addresses")
    apdu = b"\x00\xb0" + offset.to_bytes(2, "big")
    apdu += bytes([n % 256]) if n <= 256 else b"\x00" + n.to_bytes(2, "big")
    data, sw = send(transport, sm, apdu)
    if sw not in (b"\x90\x00", b"\x62\x82"):       # 6282: end of file before n bytes
        _check(sw, f"READ BINARY at {offset}")
    if len(data) > n:
        raise ChipError(f"READ BINARY at {offset}: {len(data)} bytes for {n} asked")
    return data


def read_file(transport: Transport, sm: SecureMessaging | None, fid: int, max_bytes: int,
              *, chunk: int = SHORT_CHUNK) -> bytes:
    """The whole file: its TLV header first (for its size), then the rest in chunks of `chunk`
    bytes (larger with a reader and card that take extended-length APDUs)."""
    select_ef(transport, sm, fid)
    head = read_binary(transport, sm, 0, min(8, max_bytes))
    if not head:
        raise ChipError(f"file {fid:04X} is empty")
    _, _, vstart, n = tlv.header(head, 0)
    total = vstart + n
    if total > max_bytes:
        raise TooLarge(f"file {fid:04X} claims {total} bytes, more than {max_bytes}")
    if total > MAX_EVEN_OFFSET + chunk:
        raise TooLarge(f"file {fid:04X} claims {total} bytes, beyond READ BINARY's reach")
    out = bytearray(head[:total])
    while len(out) < total:
        part = read_binary(transport, sm, len(out), min(chunk, total - len(out)))
        if not part:
            raise ChipError(f"file {fid:04X} ended at {len(out)} of {total} bytes")
        out += part
    return bytes(out)
