"""Read every undelivered check-in that can still be read from a damaged outbox file.

Used when SQLite has proven a live outbox damaged (it is moved aside, a fresh one started and the
rows read here go into it with their original ids and payloads: the hospital deduplicates by id),
and by `scanner-agent queue import` on a file kept aside. It only reads the file.

How much is missing is counted, not guessed: the `(delivered_at, seq)` index lists every
undelivered row on pages of its own, so a row whose table page is gone is still counted as lost.
When that index is unreadable too, `lost` is None (unknown) and the file is never deleted.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 256
GIVE_UP_AFTER = 64          # consecutive empty or unreadable chunks beyond the last row found
COLUMNS = "rowid, id, seq, created_at, payload, delivered_at, attempts"


@dataclass
class SalvagedRow:
    id: str
    seq: int
    created_at: float
    payload: dict[str, Any]
    attempts: int


@dataclass
class Salvage:
    rows: list[SalvagedRow] = field(default_factory=list)   # undelivered, readable, in seq order
    expected: set[int] | None = None    # seqs of every undelivered row, from the index (None: unreadable)
    complete: bool = False              # every undelivered row is in `rows`
    next_seq: int | None = None         # the damaged file's sequence counter, if readable
    error: str | None = None            # why nothing at all could be read

    def for_import(self) -> list[tuple[str, dict[str, Any], float, int]]:
        """The rows as Outbox.import_rows takes them: (id, payload, created_at, attempts)."""
        return [(r.id, r.payload, r.created_at, r.attempts) for r in self.rows]

    @property
    def lost(self) -> int | None:
        """Undelivered check-ins that could not be read (None when that cannot be counted)."""
        if self.complete:
            return 0
        if self.expected is None:
            return None
        return len(self.expected - {r.seq for r in self.rows})


def _row(r: tuple) -> SalvagedRow | None:
    """A row as read, or None when what was read cannot be a check-in (garbage on a bad page)."""
    _, event_id, seq, created, payload, delivered, attempts = r
    if delivered is not None or not isinstance(seq, int) or not isinstance(event_id, str):
        return None
    try:
        uuid.UUID(event_id)
        body = json.loads(payload)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("id") != event_id:
        return None
    return SalvagedRow(event_id, seq, float(created or 0.0), body, int(attempts or 0))


def _try(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple] | None:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.DatabaseError:
        return None


def _scan_by_rowid(conn: sqlite3.Connection, known: list[int]) -> tuple[dict[int, tuple], bool]:
    """Rows by rowid ranges, bisecting unreadable ranges down to single rows. Returns (rows, all read)."""
    found: dict[int, tuple] = {}
    clean = True
    hi_rows = _try(conn, "SELECT max(rowid) FROM events")
    top = max([*known, (hi_rows[0][0] or 0) if hi_rows else 0])
    start, last_hit = 1, 0
    while start <= top or start - last_hit <= GIVE_UP_AFTER * CHUNK:
        end = start + CHUNK - 1
        rows = _try(conn, f"SELECT {COLUMNS} FROM events WHERE rowid BETWEEN ? AND ?", (start, end))
        if rows is None:
            clean = False
            rows = [r for rowid in range(start, end + 1)
                    for r in _try(conn, f"SELECT {COLUMNS} FROM events WHERE rowid = ?", (rowid,)) or []]
        for r in rows:
            found[r[0]] = r
        if rows:
            last_hit = end
        start = end + 1
    return found, clean


def salvage(path: Path | str) -> Salvage:
    """Read what can be read of the outbox at `path` (opened directly: it is a copy kept aside)."""
    out = Salvage()
    try:
        conn = sqlite3.connect(path, timeout=5)
    except sqlite3.Error as exc:
        out.error = str(exc)
        return out
    try:
        meta = _try(conn, "SELECT value FROM meta WHERE key = 'next_seq'")
        if meta and str(meta[0][0]).isdigit():
            out.next_seq = int(meta[0][0])
        pending = _try(conn, "SELECT seq FROM events INDEXED BY idx_events_delivered_at_seq "
                             "WHERE delivered_at IS NULL")
        out.expected = {r[0] for r in pending} if pending is not None else None
        known = _try(conn, "SELECT rowid FROM events INDEXED BY idx_events_seq") or []
        rows = _try(conn, f"SELECT {COLUMNS} FROM events")
        if rows is not None:
            table_complete = True
        else:
            by_rowid, table_complete = _scan_by_rowid(conn, [r[0] for r in known])
            rows = list(by_rowid.values())
        good = [g for r in rows if (g := _row(r)) is not None]
        out.rows = sorted({g.id: g for g in good}.values(), key=lambda g: g.seq)
        saved = {g.seq for g in out.rows}
        if out.expected is not None:
            out.complete = out.expected <= saved
        else:  # no index to count by: complete only if the whole table read and every row made sense
            out.complete = table_complete and len(good) == sum(1 for r in rows if r[5] is None)
        if not rows and out.expected is None:
            out.error = "no table or index page of the outbox is readable"
    except sqlite3.Error as exc:  # the file could not be read at all (no header, not a database)
        out.error = str(exc)
    finally:
        conn.close()
    return out
