"""PC/SC readers through pcscd (pyscard): the ACR122U, any CCID contactless reader, and CI's
virtual reader (vsmartcard's vpcd) as a Transport.

pyscard is a Debian/Raspberry Pi OS package (python3-pyscard) and on PyPI a source package only
(no Linux wheels): it is imported here when a PC/SC reader is opened, so a station without one
never needs it, and its absence is a clear ChipError.

PC/SC has no timeout for SCardTransmit: a reader driver or a virtual card that stops answering
blocks the call inside pcscd. Every call here therefore runs in a short-lived daemon thread that
the caller waits for at most `timeout_s`; on a timeout the context is given up (never touched
again: pcsc-lite would block on its lock) and a fresh one is made on the next call, so one stuck
exchange costs one CardLost, never a hung station.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from agent.chip import transport
from agent.chip.transport import CardLost, ChipError

#: SCardTransmit's limit: an extended APDU of 65,535 data bytes and its header (pcsc-lite's
#: MAX_BUFFER_SIZE_EXTENDED is 4 + 3 + 65,536 + 3 bytes)
MAX_APDU = 4 + 3 + 65536 + 3

# PC/SC return codes (pcsc-lite's pcsclite.h), as unsigned 32-bit values
_NO_SERVICE = 0x8010001D
_SERVICE_STOPPED = 0x8010001E
_NO_READERS = 0x8010002E
_NO_SMARTCARD = 0x8010000C
_TIMEOUT = 0x8010000A
_SHARING = 0x8010000B
#: what a transmit or connect may meet when the card or the reader went away: CardLost
_LOST = {
    _NO_SMARTCARD, _NO_SERVICE, _SERVICE_STOPPED, _TIMEOUT,
    0x80100069,  # SCARD_W_REMOVED_CARD
    0x80100068,  # SCARD_W_RESET_CARD
    0x80100067,  # SCARD_W_UNPOWERED_CARD
    0x80100066,  # SCARD_W_UNRESPONSIVE_CARD
    0x80100017,  # SCARD_E_READER_UNAVAILABLE
    0x80100009,  # SCARD_E_UNKNOWN_READER
    0x80100016,  # SCARD_E_NOT_TRANSACTED
    0x8010002F,  # SCARD_E_COMM_DATA_LOST
    0x80100013,  # SCARD_F_COMM_ERROR
    0x80100003,  # SCARD_E_INVALID_HANDLE (the reader was unplugged under the handle)
    0x8010000F,  # SCARD_E_PROTO_MISMATCH (a card swapped for another)
}


class _Stuck(Exception):
    """A PC/SC call did not return in time."""


def _scard() -> Any:
    try:
        from smartcard import scard
    except ImportError as e:
        raise ChipError("pyscard is not installed: on Raspberry Pi OS 'apt-get install python3-pyscard pcscd' "
                        "(the station's venv sees system packages), elsewhere "
                        "pip install 'scanner-agent[chip]' with swig and libpcsclite-dev") from e
    return scard


def _u32(rc: int) -> int:
    return rc & 0xFFFFFFFF


def _message(scard: Any, rc: int) -> str:
    try:
        return f"{scard.SCardGetErrorMessage(rc).strip().rstrip('.')} (0x{_u32(rc):08X})"
    except Exception:  # noqa: BLE001 - the code alone still says what happened
        return f"PC/SC error 0x{_u32(rc):08X}"


def _bounded(fn: Callable[[], Any], timeout_s: float) -> Any:
    """fn() in a daemon thread, waited for at most timeout_s (raises _Stuck)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["r"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["e"] = e
    t = threading.Thread(target=run, name="pcsc-call", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise _Stuck()
    if "e" in box:
        raise box["e"]
    return box["r"]


def pick_reader(readers: list[str], device: str | None) -> str:
    """The reader to use: the first one, or the first whose name contains `device` (any case)."""
    if not readers:
        raise ChipError("no PC/SC reader found: plug in the reader (ACR122U or another CCID reader) "
                        "and check 'pcsc_scan'")
    if not device:
        return readers[0]
    for name in readers:
        if device.lower() in name.lower():
            return name
    raise ChipError(f"no PC/SC reader named like {device!r}; readers: {', '.join(readers)}")


class PcscTransport:
    """One PC/SC reader as a Transport. The card is connected on the first transmit (or by
    wait_for_card) and again after a CardLost, so one transport serves card after card."""

    def __init__(self, device: str | None = None, timeout_s: float = 5.0):
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self.device, self.timeout_s = device, timeout_s
        self.scard = _scard()
        self.reader: str | None = None
        self._ctx: int | None = None
        self._card: int | None = None
        self._proto: int | None = None
        #: pcscd's event counter for the reader when the card was lost: the next card is one
        #: put on after that (a new count), not the old one pcscd has not yet seen leave
        self._lost_at: int | None = None
        self._lock = threading.Lock()
        with self._lock:
            try:
                self._context()   # a missing pcscd or reader is a clear error now, not at the first card
            except ChipError:
                self._release()
                raise

    # -- context and card handles --------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return _bounded(fn, self.timeout_s)
        except _Stuck:
            self._abandon()
            raise CardLost(f"{what}: no answer from the reader within {self.timeout_s:g} s") from None

    def _abandon(self) -> None:
        """Give up the context without waiting: a stuck call holds its lock (released in the
        background once pcscd answers, or never)."""
        ctx, self._ctx, self._card, self._proto = self._ctx, None, None, None
        if ctx is not None:
            threading.Thread(target=self.scard.SCardReleaseContext, args=(ctx,), daemon=True,
                             name="pcsc-release").start()

    def _context(self) -> int:
        s = self.scard
        if self._ctx is None:
            try:
                rc, ctx = _bounded(lambda: s.SCardEstablishContext(s.SCARD_SCOPE_USER), self.timeout_s)
            except _Stuck:
                raise ChipError(f"pcscd did not answer within {self.timeout_s:g} s") from None
            if _u32(rc) in (_NO_SERVICE, _SERVICE_STOPPED):
                raise ChipError("pcscd is not running: 'systemctl enable --now pcscd.socket' "
                                "(apt-get install pcscd)")
            if rc != s.SCARD_S_SUCCESS:
                raise ChipError(f"PC/SC: {_message(s, rc)}")
            self._ctx = ctx
        if self.reader is None:
            self.reader = pick_reader(self._readers(), self.device)
        return self._ctx

    def _readers(self) -> list[str]:
        s = self.scard
        try:
            rc, readers = _bounded(lambda: s.SCardListReaders(self._ctx, []), self.timeout_s)
        except _Stuck:
            self._abandon()
            raise ChipError(f"pcscd did not list its readers within {self.timeout_s:g} s") from None
        if _u32(rc) == _NO_READERS:
            return []
        if rc != s.SCARD_S_SUCCESS:
            raise ChipError(f"PC/SC: {_message(s, rc)}")
        return list(readers)

    def _status(self) -> tuple[bool, int | None]:
        """(a card is on the reader, pcscd's event counter for it) without waiting."""
        s = self.scard
        ctx, reader = self._ctx, self.reader
        rc, states = self._call(lambda: s.SCardGetStatusChange(ctx, 0, [(reader, s.SCARD_STATE_UNAWARE)]),
                                "asking for the reader's state")
        if rc != s.SCARD_S_SUCCESS or not states:
            if _u32(rc) in (0x80100017, 0x80100009, _NO_SERVICE, _SERVICE_STOPPED):
                self._abandon()
                self.reader = None    # unplugged: look for it again next time
            raise CardLost(f"no reader state: {_message(s, rc)}")
        state = states[0][1]
        return bool(state & s.SCARD_STATE_PRESENT) and not state & s.SCARD_STATE_MUTE, state >> 16

    def _connect(self) -> int:
        s = self.scard
        try:
            ctx = self._context()
        except ChipError as e:
            raise CardLost(str(e)) from e   # mid-session the reader or pcscd went away
        present, count = self._status()
        if not present:
            raise CardLost("no card on the reader")
        if self._lost_at is not None and count == self._lost_at:
            raise CardLost("the card that was lost has not left the reader yet")
        rc, card, proto = self._call(lambda: s.SCardConnect(ctx, self.reader, s.SCARD_SHARE_SHARED,
                                                            s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1),
                                     "connecting to the card")
        if rc == s.SCARD_S_SUCCESS:
            self._card, self._proto, self._lost_at = card, proto, None
            return card
        if _u32(rc) == _SHARING:
            raise ChipError(f"the reader {self.reader!r} is held by another program")
        if _u32(rc) in _LOST:
            if _u32(rc) in (0x80100017, 0x80100009, _NO_SERVICE, _SERVICE_STOPPED):
                self._abandon()
                self.reader = None    # unplugged: look for it again next time
            raise CardLost(f"no card on the reader: {_message(s, rc)}")
        raise ChipError(f"PC/SC connect: {_message(s, rc)}")

    def _lost(self) -> None:
        """The card went: forget its handle and remember pcscd's count of card events."""
        self._drop_card()
        try:
            self._lost_at = self._status()[1] if self._ctx is not None else None
        except CardLost:
            self._lost_at = None

    def _drop_card(self) -> None:
        card, self._card, self._proto = self._card, None, None
        if card is not None:
            s = self.scard
            try:
                _bounded(lambda: s.SCardDisconnect(card, s.SCARD_LEAVE_CARD), self.timeout_s)
            except _Stuck:
                self._abandon()

    # -- the Transport --------------------------------------------------------------------------
    def transmit(self, apdu: bytes) -> bytes:
        """One APDU to the card and its answer (data + SW1 SW2); CardLost when it went away."""
        if not 4 <= len(apdu) <= MAX_APDU:
            raise ValueError(f"an APDU has 4 to {MAX_APDU} bytes, not {len(apdu)}")
        s = self.scard
        with self._lock:
            card = self._card if self._card is not None else self._connect()
            pci = s.SCARD_PCI_T1 if self._proto == s.SCARD_PROTOCOL_T1 else s.SCARD_PCI_T0
            rc, response = self._call(lambda: s.SCardTransmit(card, pci, list(apdu)), "sending a command")
            if rc != s.SCARD_S_SUCCESS:
                self._lost()
                if _u32(rc) in _LOST:
                    raise CardLost(f"the card left the reader: {_message(s, rc)}")
                raise ChipError(f"PC/SC transmit: {_message(s, rc)}")
            if len(response) < 2:
                self._lost()
                raise CardLost(f"the card answered {len(response)} bytes, not even a status word")
            return bytes(response)

    def wait_for_card(self, timeout_s: float, poll_s: float = 0.2) -> bool:
        """True once a card is on the reader (then connected), False after timeout_s without one.
        Polls with SCardConnect (an empty reader answers at once), which also finds a reader
        plugged in again."""
        with self._lock:
            return transport.wait_for_card(lambda: self._card is not None, self._connect, timeout_s, poll_s)

    def close(self) -> None:
        """Leave the card as it is and release the context (never waits longer than timeout_s)."""
        with self._lock:
            self._drop_card()
            self._release()

    def _release(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                _bounded(lambda: self.scard.SCardReleaseContext(ctx), self.timeout_s)
            except _Stuck:
                pass

    def __enter__(self) -> "PcscTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader_check(device: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """doctor's line for a PC/SC reader: pyscard importable, pcscd answering, the reader present."""
    try:
        t = PcscTransport(device, timeout_s)
    except ChipError as e:
        return False, str(e)
    try:
        readers = t._readers()
        others = [r for r in readers if r != t.reader]
        more = f" (also: {', '.join(others)})" if others else ""
        return True, f"PC/SC reader {t.reader!r}{more}"
    except ChipError as e:
        return False, str(e)
    finally:
        t.close()
