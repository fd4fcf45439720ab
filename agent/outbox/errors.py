"""SQLite's errors on the outbox, turned into one line for IT (what went wrong, and what to do),
and the proof of damage that alone allows the outbox to be moved aside."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from agent import paths


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message names the path, the cause and the fix.

    Raised for conditions that are not proven damage (busy, permissions, disk full, I/O errors):
    nothing was moved, repaired or deleted."""


class OutboxBusy(OutboxError):
    """Another process held the outbox's lock for longer than the busy timeout. Nothing changed."""


class OutboxFull(OutboxError):
    """The outbox refuses a check-in (too many undelivered, or too little disk). Nothing was dropped."""


class TooLarge(OutboxError):
    """The outbox refuses a check-in larger than the station publishes (agent.event.MAX_CHECKIN_BYTES):
    stored, it could never be sent. Nothing was stored."""


# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26
BUSY_TIMEOUT_S = 10.0


class Damaged(Exception):
    """SQLite's own quick_check proved the file damaged (`proof` says how)."""

    def __init__(self, proof: str):
        super().__init__(proof)
        self.proof = proof


def code(exc: BaseException) -> int:
    """SQLite's primary result code of `exc` (0 when it carries none)."""
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Another process holds the lock: worth waiting for, never damage."""
    return code(exc) in (_BUSY, _LOCKED)


def damage_proof(path: Path, exc: BaseException) -> str | None:
    """SQLite's own proof that the file at `path` is damaged, or None when it is not proven.

    Only a corruption error confirmed by `PRAGMA quick_check` on a fresh connection (or a file
    SQLite cannot even recognise) counts: locked, busy, unopenable or full is never damage.
    """
    if code(exc) not in (_CORRUPT, _NOTADB):
        return None
    try:
        verdict = _quick_check(path)
    except sqlite3.DatabaseError as again:
        return f"{again}" if code(again) in (_CORRUPT, _NOTADB) else None
    return None if verdict == "ok" else f"quick_check: {verdict}"


def _owner_hint(path: Path) -> str:
    """For 'cannot open': name files of the outbox this user cannot write (root-owned leftovers)."""
    wrong = []
    for p in (path, *paths.sidecars(path), path.parent):
        try:
            st = p.stat()
        except OSError:
            continue
        if not os.access(p, os.R_OK | os.W_OK):
            wrong.append(f"{p} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    if not wrong:
        return ""
    user = os.environ.get("USER") or str(os.geteuid())
    return (f"; not writable by this user ({user}): {', '.join(wrong)}; fix with "
            f"'sudo chown {user}: {' '.join(w.split(' (')[0] for w in wrong)}'")


def explain(path: Path, exc: BaseException) -> str:
    """One line for IT: what went wrong with the outbox at `path`, and what to do."""
    c = code(exc)
    if c in (_BUSY, _LOCKED):
        return (f"outbox {path} is locked by another process (waited {BUSY_TIMEOUT_S:.0f} s); "
                "nothing was changed: try again, or find the process holding it (fuser)")
    if c == _FULL:
        return f"disk full: cannot write the outbox {path} (SQLite: {exc}); free space on the card"
    if c in (_READONLY, _CANTOPEN, _PERM):
        return f"cannot open the outbox {path} for writing (SQLite: {exc}){_owner_hint(path)}"
    if c == _IOERR:
        return f"I/O error on the outbox {path} (SQLite: {exc}): the SD card may be failing"
    if c in (_CORRUPT, _NOTADB):
        return f"SQLite reported damage in {path} that quick_check does not confirm ({exc}); nothing moved"
    return f"outbox {path}: {exc}"


def error(path: Path, exc: BaseException) -> OutboxError:
    """The OutboxError (OutboxBusy when locked) that explains `exc` on the outbox at `path`."""
    cls = OutboxBusy if is_busy(exc) else OutboxError
    return cls(explain(path, exc))


def _quick_check(path: Path) -> str:
    """`PRAGMA quick_check` on a fresh read-only connection ("ok" when sound); raises sqlite3 errors."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        conn.close()


def integrity(path: Path) -> str:
    """SQLite's quick_check of an outbox file, read-only ("ok" when sound); never moves or repairs.
    Raises OutboxError when the file cannot be read at all."""
    try:
        return _quick_check(path)
    except sqlite3.Error as exc:
        raise error(path, exc) from None
