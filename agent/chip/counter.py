"""At the counter (issue 33): after a CCCD's QR, the card laid on the reader is read here, in a
supervised worker, never in the camera loop; the check-in's `chip` field is built from the result.

The station asks (`request`, with the QR's card fields and a deadline of `[chip] timeout_s`) and
polls (`outcome`); the worker waits for a card on the pad (a transport raising CardLost before any
answer: nobody has laid it yet), reads it with agent.chip.terminal.read_chip, and tries again when
the card left mid-read, until the deadline. The station stores the check-in as soon as the outcome
comes, or at the deadline (plus a grace) without it: a dead or stuck worker never holds a check-in.

Privacy: the face (DG2) is read only with `read_face` and never logged; the check-in carries only
the DG13 fields of `dg13_fields`; reasons are one line, capped, with no field values in them.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Callable

from agent.cards.sanitize import one_line
from agent.chip import pace as pace_mod
from agent.chip.access import chip_access, issued_of
from agent.chip.reader import ReaderMissing, open_reader
from agent.chip.terminal import ChipResult, read_chip
from agent.chip.transport import CardLost, ChipError, Transport
from agent.faults import Fault
from agent.status_types import ChipStatus
from agent.worker import Worker

log = logging.getLogger(__name__)

#: pause between two looks for a card on the pad
POLL_S = 0.1
#: a reader that could not be opened is tried again this often while idle (status shows why)
REOPEN_S = 30.0
#: the largest face image a check-in carries (base64 makes it a third larger; the whole check-in
#: must stay under agent.event.MAX_CHECKIN_BYTES): a larger one is left out, and the reason says so
MAX_FACE_BYTES = 16 * 1024
#: config name (agent.config.DG13_FIELDS) -> the chip reader's key (agent.chip.lds)
DG13_KEYS = {"issued": "issue_date"}
_DMY = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4})")
#: what the QR and the chip must agree on; a difference is the `chip_mismatch` flag
COMPARED = ("id_number", "name", "birth_date")


@dataclass
class ChipOutcome:
    result: ChipResult
    mismatch: list[str] = field(default_factory=list)   # of COMPARED, those that differ
    seconds: float = 0.0


def absent(reason: str) -> ChipOutcome:
    return ChipOutcome(ChipResult("absent", "none", None, reason, None, None, None))


def iso_date(text: Any) -> Any:
    """The chip's dd/mm/yyyy as YYYY-MM-DD (the check-in's dates); any other text as it is."""
    m = _DMY.fullmatch(text) if isinstance(text, str) else None
    return f"{m.group(3)}-{m.group(2)}-{m.group(1)}" if m else text


def _same_name(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return " ".join(unicodedata.normalize("NFC", s).casefold().split())
    return norm(a) == norm(b)


def compare(card: dict[str, Any], result: ChipResult) -> list[str]:
    """Which of COMPARED the QR's card fields and the chip's DG13 (else DG1) disagree on; nothing
    is compared that either side lacks. A QR birth date of only a year or month compares as a prefix."""
    dg13, dg1 = result.dg13 or {}, result.dg1 or {}
    out = []
    chip_id = dg13.get("id_number") or dg1.get("id_number")
    if card.get("id_number") and chip_id and chip_id != card["id_number"]:
        out.append("id_number")
    if isinstance(card.get("name"), str) and isinstance(dg13.get("name"), str) \
            and not _same_name(card["name"], dg13["name"]):
        out.append("name")
    qr_birth, chip_birth = card.get("birth_date"), iso_date(dg13.get("birth_date"))
    if isinstance(qr_birth, str) and isinstance(chip_birth, str) and _DMY.fullmatch(dg13.get("birth_date", "")) \
            and not chip_birth.startswith(qr_birth):
        out.append("birth_date")
    return out


def chip_fields(dg13: dict[str, Any] | None, wanted: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The configured DG13 fields (config names), dates as YYYY-MM-DD; `parents` as [father, mother]."""
    if not dg13:
        return {}
    out: dict[str, Any] = {}
    for name in wanted:
        if name == "parents":
            if dg13.get("father") or dg13.get("mother"):
                out[name] = [dg13.get("father"), dg13.get("mother")]
            continue
        value = dg13.get(DG13_KEYS.get(name, name))
        if value is not None:
            out[name] = iso_date(value) if name in ("birth_date", "issued", "expiry") else value
    return out


def chip_field(outcome: ChipOutcome, dg13_fields, *, read_face: bool = False) -> dict[str, Any]:
    """The check-in's `chip` (agent/schemas/checkin.json, schema 1.2)."""
    r = outcome.result
    reason = r.reason or ""
    chip: dict[str, Any] = {"verified": r.verified, "clone_check": r.clone_check, "access": r.access,
                            "reason": "", "mismatch": list(outcome.mismatch),
                            "fields": chip_fields(r.dg13, dg13_fields) if r.verified != "absent" else {}}
    if read_face and r.face_jpeg:
        if len(r.face_jpeg) <= MAX_FACE_BYTES:
            chip["face_jpeg"] = base64.b64encode(r.face_jpeg).decode("ascii")
        else:
            reason = "; ".join(x for x in (reason, f"face image left out ({len(r.face_jpeg)} bytes, "
                                                   f"over {MAX_FACE_BYTES})") if x)
    chip["reason"] = one_line(reason, 300)
    return chip


def _judged(card: dict[str, Any], result: ChipResult) -> ChipOutcome:
    """The outcome, the QR compared with the chip: a chip naming another person is `failed`."""
    if result.verified == "absent":
        return ChipOutcome(result)
    mismatch = compare(card, result)
    if mismatch and result.verified != "failed":
        result = dataclasses.replace(result, verified="failed",
                                     reason=f"the chip's {' and '.join(mismatch)} differ from the QR's")
    return ChipOutcome(result, mismatch)


class _Probe:
    """The transport, noting whether the card answered and whether the last command lost it."""

    def __init__(self, transport: Transport):
        self.t, self.answered, self.lost = transport, False, False

    def transmit(self, apdu: bytes) -> bytes:
        try:
            resp = self.t.transmit(apdu)
        except CardLost:
            self.lost = True
            raise
        self.answered, self.lost = True, False
        return resp


@dataclass
class _Request:
    ticket: int
    card: dict[str, Any]
    today: date | None
    deadline: float


class ChipReader(Worker):
    """The supervised worker that reads the card on the pad (see the module docstring)."""

    def __init__(self, cfg, transport: Transport | None = None, *,
                 opener: Callable[[Any], Transport] = open_reader, pace: Callable | None = pace_mod.pace):
        super().__init__("chip")
        self.cfg, self.opener, self.pace = cfg, opener, pace
        self.transport = transport
        self.injected = transport is not None
        #: a worker waiting in a transport that hangs past this counts as stuck (the station has
        #: stored the check-in without the chip long before)
        self.stall_s = max(60.0, 4 * cfg.timeout_s)
        self.reader_problem: str | None = None    # why the reader cannot be used, None: fine
        self.reads: dict[str, int] = {}           # outcomes by `verified`, for status and health
        self._cond = threading.Condition()
        self._want: _Request | None = None
        self._done: dict[int, ChipOutcome] = {}
        self._tickets = 0
        self._next_open = 0.0

    # -- the station's side: never blocks ------------------------------------------------------

    def request(self, card: dict[str, Any], today: date | None = None) -> int:
        """Read the card whose QR gave `card` within `timeout_s` from now; returns the ticket."""
        with self._cond:
            self._tickets += 1
            self._want = _Request(self._tickets, dict(card), today, time.monotonic() + self.cfg.timeout_s)
            self._done.clear()
            self._cond.notify_all()
            return self._tickets

    def outcome(self, ticket: int) -> ChipOutcome | None:
        with self._cond:
            return self._done.pop(ticket, None)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the worker ----------------------------------------------------------------------------

    def work(self) -> None:
        while not self.stopping.is_set():
            if self.transport is None and time.monotonic() >= self._next_open:
                self._next_open = time.monotonic() + REOPEN_S
                self._try_open()
            with self._cond:
                self.beat()
                if self._want is None:
                    self._cond.wait(1.0)
                    continue
                req, self._want = self._want, None
            began = time.monotonic()
            out = self.read(req.card, req.today, req.deadline)
            out.seconds = round(time.monotonic() - began, 3)
            self.reads[out.result.verified] = self.reads.get(out.result.verified, 0) + 1
            with self._cond:
                self._done[req.ticket] = out
            # no field values: the outcome, the access used and the reason only
            log.info("chip read: %s, clone check %s, %s in %.2f s%s", out.result.verified, out.result.clone_check,
                     out.result.access or "no access", out.seconds,
                     f" (mismatch: {', '.join(out.mismatch)})" if out.mismatch else "")

    def finish(self) -> None:
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.injected:
            close = getattr(self.transport, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing a reader that failed
                    pass
            self.transport = None

    def _try_open(self) -> None:
        """Open the reader ahead of the first card, so status and health say at once when it is missing."""
        try:
            self._open()
            self.reader_problem = None
        except (ChipError, OSError) as exc:
            self.reader_problem = one_line(str(exc), 200)

    def _open(self) -> Transport:
        if self.transport is None:
            self.transport = self.opener(self.cfg)
        return self.transport

    def read(self, card: dict[str, Any], today: date | None, deadline: float,
             limit_s: float | None = None) -> ChipOutcome:
        """One card, until `deadline` (monotonic; `limit_s`: how long that is, for the reason,
        default timeout_s): never raises for the card or the reader."""
        try:
            access = chip_access(card, issued_of(card), today=today)
        except ValueError as exc:
            return absent(f"no chip keys from the QR: {exc}")
        lifted: ChipResult | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                probe = _Probe(self._open())
                self.reader_problem = None
                result = read_chip(probe, access, want_dg2=self.cfg.read_face,
                                   csca_dir=Path(self.cfg.csca_dir) if self.cfg.csca_dir else None,
                                   pace=self.pace, deadline_s=left)
            except ReaderMissing as exc:
                self.reader_problem = one_line(str(exc), 200)
                return absent(f"no chip reader: {self.reader_problem}")
            except (ChipError, OSError) as exc:      # the reader failed, not the card: open it again next time
                self.reader_problem = one_line(f"{type(exc).__name__}: {exc}", 200)
                self._close()
                return absent(f"chip reader error: {self.reader_problem}")
            if result.verified != "absent" or not probe.lost:
                return _judged(card, result)
            if probe.answered:
                lifted = result                      # it was there: the better reason if it never comes back
            if self.stopping.wait(min(POLL_S, max(0.0, deadline - time.monotonic()))):
                break
        t = f"{self.cfg.timeout_s if limit_s is None else limit_s:g} s"
        if lifted is not None:
            return absent(f"{lifted.reason} (not laid back within {t})")
        return absent(f"no card on the reader within {t}")

    # -- status --------------------------------------------------------------------------------

    @property
    def fault_item(self) -> Fault | None:
        item = super().fault_item
        if item is None and self.reader_problem:
            item = Fault("chip_reader", f"chip reader: {self.reader_problem}")
        return item

    def status(self) -> ChipStatus:
        return ChipStatus(**vars(super().status()), reader=self.cfg.reader, problem=self.reader_problem,
                          reads=dict(self.reads))

    def health(self) -> dict[str, Any]:
        """The health message's `chip_reader` (agent/schemas/health.json, 1.4)."""
        return {"reader": self.cfg.reader, "ok": self.fault_item is None, "problem": self.reader_problem,
                "reads": dict(self.reads)}
