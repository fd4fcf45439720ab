"""Read every undelivered check-in that can still be read from a damaged outbox file.

Used when SQLite has proven a live outbox damaged (it is moved aside, a fresh one started and the
rows read here go into it with their original ids and payloads: the hospital deduplicates by id),
and by `scanner-agent queue import` on a file kept aside. It only reads the file (read-only).

How much is missing is counted, not guessed: the `(delivered_at, seq)` index lists every
undelivered row on pages of its own, so a row whose table page is gone is still counted as lost.
When that index is unreadable too, `lost` is None (unknown) and the file is never deleted.

A file is recognised by its content, not its name or its first 16 bytes: when SQLite cannot open
it at all (a damaged header), the header is rebuilt on a copy in memory (magic, page size guessed
from where b-tree pages start, file format bytes) and read again; when even that reads nothing
(the first page, with the schema, is gone), the pages are scanned for the check-ins' JSON itself.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b"SQLite format 3\0"
#: the most of a damaged file read into memory to repair it (an outbox at its 50 000-event limit is
#: well under this); a larger file is only read by SQLite directly
MAX_REPAIR_BYTES = 256 << 20
_BTREE_FLAGS = {2, 5, 10, 13}      # the first byte of every b-tree page
_PAGE_SIZES = [1 << n for n in range(9, 17)]
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
    method: str = "read"                # "read", "header repaired" or "page scan" (delivered unknown)

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


def is_database(path: Path | str) -> bool:
    """Whether the file holds an SQLite database (sound or damaged) rather than JSON lines: by its
    header, or else by the NUL bytes no `queue export` file contains (JSON escapes them)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    return head.startswith(HEADER) or b"\0" in head


def _page_size(data: bytes | bytearray) -> int | None:
    """The page size: the header's when it is plausible, else the smallest size at whose multiples
    (nearly) as many b-tree pages start as at the best one's (a multiple of the real size also
    lands on page starts, a fraction of it mostly inside pages)."""
    def score(size: int) -> float:
        starts = range(size, min(len(data), size * 257), size)
        return sum(data[i] in _BTREE_FLAGS for i in starts) / max(1, len(starts))
    fits = [n for n in _PAGE_SIZES if len(data) % n == 0 and len(data) >= 2 * n]
    if not fits:
        return None
    stated = int.from_bytes(data[16:18], "big")
    stated = 65536 if stated == 1 else stated
    scores = {n: score(n) for n in fits}
    best = max(scores.values())
    if best == 0:
        return None
    if stated in scores and scores[stated] >= 0.9 * best:
        return stated
    return min(n for n in fits if scores[n] >= 0.9 * best)


def repair_header(data: bytearray) -> bool:
    """Rebuild the 100-byte header's fixed fields in place (a copy: never the kept file). The copy
    is read in memory without its WAL, so it is marked a rollback-journal database."""
    size = _page_size(data)
    if size is None:
        return False
    data[0:16] = HEADER
    data[16:18] = (1 if size == 65536 else size).to_bytes(2, "big")
    data[18] = data[19] = 1
    data[20] = 0                                            # no reserved bytes: the outbox never sets any
    data[21:24] = b"\x40\x20\x20"                          # payload fractions, fixed by the format
    data[28:32] = (len(data) // size).to_bytes(4, "big")    # the size in pages, valid for this change
    data[92:96] = data[24:28]
    return True


_ENVELOPE = re.compile(r'\{"schema":')


def scan_pages(data: bytes | bytearray) -> list[SalvagedRow]:
    """Check-ins found by their JSON text anywhere in the file (a page scan for when the schema page
    is gone): each an object with the envelope's id and seq. Whether one was already delivered
    cannot be told, so all are returned: the hospital deduplicates by id."""
    text = bytes(data).decode("utf-8", "replace")
    decoder = json.JSONDecoder()
    found: dict[str, SalvagedRow] = {}
    pos = 0
    while (m := _ENVELOPE.search(text, pos)) is not None:
        try:
            body, end = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            pos = m.end()
            continue
        pos = end
        event_id, seq = body.get("id"), body.get("seq")
        if not isinstance(event_id, str) or not isinstance(seq, int) or isinstance(seq, bool) \
                or not isinstance(body.get("station"), str):
            continue
        try:
            uuid.UUID(event_id)
        except ValueError:
            continue
        found.setdefault(event_id, SalvagedRow(event_id, seq, 0.0, body, 0))
    return sorted(found.values(), key=lambda r: r.seq)


def salvage(path: Path | str) -> Salvage:
    """Read what can be read of the outbox at `path` (a copy kept aside): directly; else with its
    header rebuilt in memory; else by a page scan for check-ins."""
    out = _salvage(lambda: sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=5))
    if out.rows or out.expected is not None or not out.error:
        return out
    try:
        if os.path.getsize(path) > MAX_REPAIR_BYTES:
            return out
        data = bytearray(Path(path).read_bytes())
    except OSError as exc:
        out.error = f"{out.error}; {exc.strerror or exc}"
        return out
    if repair_header(data):
        def in_memory() -> sqlite3.Connection:
            conn = sqlite3.connect(":memory:")
            conn.deserialize(bytes(data))
            return conn
        repaired = _salvage(in_memory)
        if repaired.rows or repaired.expected is not None:
            repaired.method = "header repaired"
            return repaired
    found = scan_pages(data)
    if found:
        return Salvage(rows=found, expected=None, complete=False, next_seq=max(r.seq for r in found) + 1,
                       method="page scan")
    return out


def _salvage(connect) -> Salvage:
    out = Salvage()
    try:
        conn = connect()
    except sqlite3.Error as exc:
        out.error = str(exc)
        return out
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()   # no schema: no query can work
    except sqlite3.DatabaseError as exc:
        out.error = str(exc)
        conn.close()
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
