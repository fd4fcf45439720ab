"""Reading a CCCD chip end to end: access (PACE with the CAN when a `pace` callable is given,
else or then BAC with each expiry the QR allows), the files (EF.COM, EF.SOD, DG1, DG13, DG14,
DG15, DG2 when asked), passive authentication, then the clone checks: active authentication
(DG15, 9303-11 6.1) and chip authentication (DG14, 9303-11 6.2; the stronger: "chip" when it
passes, "failed" when either fails).

Whatever the card answers (nothing, garbage, a lie, or leaving mid-read) `read_chip` returns a
ChipResult with a one-line reason; it raises only for programming errors. A deadline and a cap
on commands bound the whole read, so a slow or chatty card cannot hold the station."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from agent.chip import files, lds, passive
from agent.chip.active import active_auth
from agent.chip.ca import Unsupported, chip_auth
from agent.chip.bac import AccessDenied, bac, mrz_info
from agent.chip.sm import SecureMessaging
from agent.chip.transport import CardLost, ChipError, Transport

MAX_BYTES = {"com": 1024, "sod": 32 * 1024, 1: 1024, 13: 8 * 1024, 14: 8 * 1024,
             15: 4 * 1024, 2: 32 * 1024}
MAX_APDUS = 1500


@dataclass
class ChipResult:
    verified: str            # "chain" | "signature" | "failed" | "absent"
    clone_check: str         # "active" | "chip" | "none" | "failed"
    access: str | None       # "pace-can" | "bac:<rule>" | None
    reason: str              # one line, always set when failed/absent
    dg1: dict | None         # MRZ fields
    dg13: dict | None        # decoded DG13
    face_jpeg: bytes | None  # DG2's image only when asked


class Access(Protocol):
    """What read_chip needs of agent.chip.access.ChipAccess."""

    document_number: str
    id_number: str
    birth_yymmdd: str | None
    expiry_candidates: list[tuple[str, str]]
    can: str


class _Link:
    """The transport with the read's deadline and command cap: past either, the card counts as
    gone (CardLost), as a transport's own timeout does."""

    def __init__(self, transport: Transport, deadline: float, max_apdus: int):
        self.t, self.deadline, self.left = transport, deadline, max_apdus

    def transmit(self, apdu: bytes) -> bytes:
        if time.monotonic() > self.deadline:
            raise CardLost("the chip read took longer than its deadline")
        self.left -= 1
        if self.left < 0:
            raise CardLost("the card needed more commands than a read takes")
        resp = self.t.transmit(apdu)
        if not isinstance(resp, (bytes, bytearray)) or len(resp) > 70000:
            raise ChipError("the reader returned no usable answer")
        return bytes(resp)


def _absent(reason: str, access: str | None = None) -> ChipResult:
    return ChipResult("absent", "none", access, reason, None, None, None)


def _open(link: _Link, access: Access, pace: Callable | None) -> tuple[SecureMessaging, str]:
    """A secure session and how it was opened; raises AccessDenied when no key worked."""
    if pace is not None and getattr(access, "can", None):
        try:
            card_access = _read_plain(link, files.FID_CARD_ACCESS)
            sm = pace(link, access.can, card_access)
            files.select_applet(link, sm)
            return sm, "pace-can"
        except CardLost:
            raise
        except (ChipError, ValueError):
            pass                                  # no PACE on this chip, or it refused: BAC
    if not access.birth_yymmdd:
        raise AccessDenied("no birth date for BAC")
    tried = 0
    for expiry, rule in access.expiry_candidates:
        try:
            info = mrz_info(access.document_number, access.birth_yymmdd, expiry)
        except ValueError:
            continue                              # not a date: not a key to try
        files.select_applet(link)
        try:
            sm = bac(link, info)
        except AccessDenied:
            tried += 1
            continue
        return sm, f"bac:{rule}"
    raise AccessDenied(f"the chip refused the keys ({tried} expiry dates tried)")


def _read_plain(link: _Link, fid: int) -> bytes:
    return files.read_file(link, None, fid, 1024)


def read_chip(transport: Transport, access: Access, *, want_dg2: bool = False,
              csca_dir: Path | None = None, pace: Callable | None = None,
              now: datetime | None = None, deadline_s: float = 20.0,
              chunk: int = files.SHORT_CHUNK) -> ChipResult:
    """Reads and verifies the chip; see the module docstring."""
    link = _Link(transport, time.monotonic() + deadline_s, MAX_APDUS)
    step = "opening the chip"
    try:
        sm, how = _open(link, access, pace)
    except CardLost as e:
        return _absent(f"no card or card lifted while {step}: {e}")
    except AccessDenied as e:
        return _absent(str(e))
    except (ChipError, ValueError) as e:
        return _absent(f"the chip's answer to access made no sense: {e}")
    dg1 = dg13 = face = None
    try:
        step = "reading EF.COM"
        listed = lds.parse_com(files.read_file(link, sm, files.FID_COM, MAX_BYTES["com"], chunk=chunk))
        step = "reading EF.SOD"
        sod = files.read_file(link, sm, files.FID_SOD, MAX_BYTES["sod"], chunk=chunk)
        step = "decoding EF.SOD"
        # the data groups the issuer signed: EF.COM is not signed, and a clone whose EF.COM leaves
        # DG15 out would otherwise skip active authentication (passive.verify checks the signature)
        signed = set(lds.parse_sod(sod).dg_hashes)
        groups: dict[int, bytes] = {}
        notes: list[str] = []
        wanted = [1, 13, 14, 15] + ([2] if want_dg2 else [])
        for n in wanted:
            step = f"reading DG{n}"
            if n not in (1, 13) and n not in listed and n not in signed:
                continue
            try:
                groups[n] = files.read_file(link, sm, files.DG_FID[n], MAX_BYTES[n], chunk=chunk)
            except files.FileNotFound:
                if n in (1, 13) or n in signed:      # a signed group the chip will not give
                    raise
            except files.TooLarge as e:
                if n != 2:
                    raise
                notes.append(f"face not read: {e}")  # the rest is verified without it
        step = "decoding DG1"
        dg1 = lds.parse_dg1(groups[1])
        step = "decoding DG13"
        dg13 = lds.parse_dg13(groups[13])
        if 2 in groups:
            step = "decoding DG2"
            face = lds.dg2_image(groups[2])
        step = "checking the SOD"
        pa = passive.verify(sod, groups, csca_dir, now)
        clone, clone_reason = "none", ""
        if 15 in groups:
            step = "active authentication"
            ec_hash = lds.dg14_aa_hash(groups[14]) if 14 in groups else None
            ok, why = active_auth(link, sm, lds.dg15_key(groups[15]), ec_hash)
            clone, clone_reason = ("active", "") if ok else ("failed", why)
        if 14 in groups:
            # last: it restarts secure messaging with the keys it agrees (9303-11 6.2)
            step = "chip authentication"
            clone, clone_reason, note = _chip_auth(link, sm, groups[14], clone, clone_reason)
            if note:
                notes.append(note)
    except CardLost as e:
        return ChipResult("absent", "none", how, f"card lifted while {step}: {e}", dg1, dg13, None)
    except (ChipError, ValueError, InvalidSignature, UnsupportedAlgorithm) as e:
        return ChipResult("failed", "none", how, f"{step}: {str(e)[:160]}", dg1, dg13, None)
    verified, reason = pa.level, pa.reason
    if verified != "failed":
        mismatch = _mismatch(access, dg1, dg13)
        if mismatch:
            verified, reason = "failed", mismatch
    if clone == "failed":
        reason = "; ".join(r for r in (reason, clone_reason) if r)
    reason = "; ".join(r for r in (reason, *notes) if r)
    return ChipResult(verified, clone, how, reason, dg1, dg13, face)


def _chip_auth(link: _Link, sm: SecureMessaging, dg14: bytes, clone: str,
               clone_reason: str) -> tuple[str, str, str]:
    """(clone_check, its reason, a note) after chip authentication with DG14's key, given active
    authentication's outcome: CA passing makes "chip" unless AA failed; a DG14 the terminal
    cannot use is a failure, one it does not support (DH) a note. CardLost passes through."""
    try:
        info = lds.parse_dg14_ca(dg14)
    except ChipError as e:
        return "failed", "; ".join(r for r in (clone_reason, f"chip authentication: {str(e)[:120]}") if r), ""
    if info is None:
        return clone, clone_reason, ""
    try:
        _, ok, why = chip_auth(link, sm, info)
    except Unsupported as e:
        return clone, clone_reason, str(e)
    if not ok:
        return "failed", "; ".join(r for r in (clone_reason, why) if r), ""
    return ("failed", clone_reason, "") if clone == "failed" else ("chip", "", "")


def _mismatch(access: Access, dg1: dict, dg13: dict) -> str:
    """The chip must be the card whose QR was shown: same ID number."""
    want = getattr(access, "id_number", None)
    got = dg13.get("id_number") or dg1.get("id_number")
    if want and got and got != want:
        return "the chip's ID number differs from the QR's"
    return ""
