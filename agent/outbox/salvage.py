"""Read every undelivered check-in that can still be read from a damaged outbox file.

Used when SQLite has proven a live outbox damaged (it is moved aside, a fresh one started and the
rows read here go into it with their original ids and payloads: the hospital deduplicates by id),
and by `scanner-agent queue import` on a file kept aside. It only reads the file (read-only).

How much is missing is counted, not guessed: the `(delivered_at, seq)` index lists every
undelivered row on pages of its own, so a row whose table page is gone is still counted as lost.
When that index is unreadable too, `lost` is None (unknown) and the file is never deleted.

A file is recognised by its content, not its name or its first 16 bytes: when SQLite cannot open
it at all (a damaged header), the header is rebuilt on a copy-on-write map of the file (magic, page
size guessed from where b-tree pages start, file format bytes) and read again; when even that reads
nothing (the first page, with the schema, is gone), the pages are scanned for the check-ins' JSON
itself (agent.outbox.pagescan).

The work is bounded by what the file holds, never by the ids in it: the table is walked over the
rows that exist (a rowid near 2**62 is one step), an unreadable range stepped over by probing (at
most 2 x 64 b-tree descents each); every payload is bounded in size and nesting before it is
parsed, as `queue import` bounds a line. The daemon also gives a salvage a deadline and a number of
check-ins (`deadline_s`, `max_rows`): what it did not read stays in the kept file, for IT's import.
"""

from __future__ import annotations

import json
import mmap
import os
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from agent import jsonbound
from agent.outbox import pagescan

HEADER = b"SQLite format 3\0"
#: the most of a damaged file repaired in memory or scanned (an outbox at its 50 000-event limit is
#: about 45 MB); a larger file is only read by SQLite directly
MAX_REPAIR_BYTES = 256 << 20
#: a check-in is a few kilobytes, three levels deep: a payload beyond these is refused unparsed,
#: as `queue import` refuses such a line (agent.admin.queue MAX_LINE_BYTES, MAX_DEPTH)
MAX_RECORD_BYTES = 1 << 16
MAX_DEPTH = 16
#: refusals said one by one (as `queue import` names them); the rest are counted
MAX_REFUSALS = 20
_BTREE_FLAGS = {2, 5, 10, 13}      # the first byte of every b-tree page
_PAGE_SIZES = [1 << n for n in range(9, 17)]
_MIN_ROWID, _MAX_ROWID = -(1 << 63), (1 << 63) - 1
_BAD = object()                    # a probe that met an unreadable page
_REFUSED = {pagescan.TOO_LONG: f"longer than {MAX_RECORD_BYTES} bytes",
            pagescan.TOO_DEEP: f"nested deeper than {MAX_DEPTH} levels"}
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
    rejected: list[str] = field(default_factory=list)   # the first records refused unparsed, and why
    refused: int = 0                    # records refused unparsed (too long, too deep), all of them
    stopped: str | None = None          # why reading stopped before the end (deadline_s, max_rows)

    def for_import(self) -> list[tuple[str, dict[str, Any], float, int]]:
        """The rows as Outbox.import_rows takes them: (id, payload, created_at, attempts)."""
        return [(r.id, r.payload, r.created_at, r.attempts) for r in self.rows]

    @property
    def lost(self) -> int | None:
        """Undelivered check-ins that could not be read (None when that cannot be counted, or
        reading stopped early: the rest is still in the file)."""
        if self.complete:
            return 0
        if self.expected is None or self.stopped:
            return None
        return len(self.expected - {r.seq for r in self.rows})


class _Budget:
    """How far one salvage may go; late() says when to stop (and `stopped` why)."""

    def __init__(self, seconds: float | None, max_rows: int | None):
        self.seconds, self.max_rows = seconds, max_rows
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.stopped: str | None = None
        self.refused = 0

    def late(self) -> bool:
        if self.stopped is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.stopped = f"stopped after {self.seconds:g} s"
        return self.stopped is not None

    def full(self, rows: int) -> bool:
        if self.stopped is None and self.max_rows is not None and rows >= self.max_rows:
            self.stopped = f"stopped at {self.max_rows} check-ins"
        return self.stopped is not None

    def refuse(self, out: Salvage, why: Callable[[], str]) -> None:
        self.refused += 1
        if self.refused <= MAX_REFUSALS:
            out.rejected.append(why())

    def finish(self, out: Salvage) -> Salvage:
        out.refused, out.stopped = self.refused, self.stopped
        return out


def _payload(text: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A stored payload parsed within the bounds: (object, None), (None, why refused), or (None,
    None) when it is not JSON. Counting brackets first spares the exact nesting count (a Python
    loop) for the few-bracket payloads every real check-in has."""
    if isinstance(text, bytes):          # a BLOB where the outbox writes TEXT: read it all the same
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str):
        return None, None
    if len(text) > MAX_RECORD_BYTES // 4 and len(text.encode()) > MAX_RECORD_BYTES:
        return None, f"longer than {MAX_RECORD_BYTES} bytes"
    if text.count("[") + text.count("{") > MAX_DEPTH and jsonbound.nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        return None, f"nested deeper than {MAX_DEPTH} levels"
    try:
        body = json.loads(text)
    except ValueError:
        return None, None
    return (body, None) if isinstance(body, dict) else (None, None)


def _row(r: tuple) -> tuple[SalvagedRow | None, str | None]:
    """A row as read (None when what was read cannot be a check-in: garbage on a bad page), and
    why its payload was refused unparsed (None: it was not)."""
    _, event_id, seq, created, payload, delivered, attempts = r
    if delivered is not None or not isinstance(seq, int) or not isinstance(event_id, str):
        return None, None
    try:
        uuid.UUID(event_id)
    except ValueError:
        return None, None
    body, refused = _payload(payload)
    if body is None or body.get("id") != event_id:
        return None, refused
    created = float(created) if isinstance(created, (int, float)) else 0.0
    return SalvagedRow(event_id, seq, created, body, attempts if isinstance(attempts, int) else 0), None


def _try(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> list[tuple] | None:
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.DatabaseError:
        return None


def _first(conn: sqlite3.Connection, at: int) -> Any:
    """The least rowid >= `at` (None: none; _BAD: an unreadable page on the way). One b-tree
    descent: it reads the rowid only, never a payload."""
    try:
        row = conn.execute("SELECT rowid FROM events WHERE rowid >= ? ORDER BY rowid LIMIT 1", (at,)).fetchone()
    except sqlite3.DatabaseError:
        return _BAD
    return None if row is None else row[0]


def _resume(conn: sqlite3.Connection, lo: int, take: Callable[[tuple], None], budget: _Budget) -> int | None:
    """Where the walk goes on after reading failed at or after rowid `lo` (None: nothing readable
    after it). A row whose cell reads but whose columns do not is tried alone and stepped over; an
    unreadable range of pages is stepped over by probing past it, in doubling steps and then
    halving ones (at most 2 x 64 probes, whatever the rowids)."""
    first = _first(conn, lo)
    if first is None:
        return None
    if first is not _BAD:
        for r in _try(conn, f"SELECT {COLUMNS} FROM events WHERE rowid = ?", (first,)) or []:
            take(r)
        return first + 1 if first < _MAX_ROWID else None
    bad, step = lo, 1
    while True:
        if budget.late():
            return None
        probe = min(lo + step, _MAX_ROWID)
        if _first(conn, probe) is not _BAD:
            break
        if probe == _MAX_ROWID:
            return None
        bad, step = probe, step * 2
    good = probe
    while good - bad > 1 and not budget.late():
        mid = (bad + good) // 2
        if _first(conn, mid) is _BAD:
            bad = mid
        else:
            good = mid
    return good


def _walk(conn: sqlite3.Connection, take: Callable[[tuple], None], budget: _Budget) -> bool:
    """Hand every row of the events table that can be read to take(), in rowid order, stepping over
    what cannot be read; the work is bounded by the rows and unreadable ranges there are, never by
    the rowids. Returns whether the whole table was read."""
    clean, start = True, _MIN_ROWID
    while start is not None:
        last = None
        try:
            for r in conn.execute(f"SELECT {COLUMNS} FROM events WHERE rowid >= ? ORDER BY rowid", (start,)):
                last = r[0]
                take(r)
                if budget.late():
                    return False
            return clean
        except sqlite3.DatabaseError:
            clean = False
        if budget.late() or last == _MAX_ROWID:
            return False
        start = _resume(conn, start if last is None else last + 1, take, budget)
    return False


def is_database(path: Path | str) -> bool:
    """Whether the file holds an SQLite database (sound or damaged) rather than JSON lines: by its
    header, or else by the NUL bytes no `queue export` file contains (JSON escapes them)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    return head.startswith(HEADER) or b"\0" in head


def _page_size(data: bytes | bytearray | mmap.mmap) -> int | None:
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


def repair_header(data: bytearray | mmap.mmap) -> bool:
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


def scan_pages(data: bytes | mmap.mmap, budget: _Budget | None = None,
               out: Salvage | None = None) -> list[SalvagedRow]:
    """Check-ins found by their JSON text anywhere in the file (a page scan for when the schema page
    is gone): each an object with the envelope's id, seq and station, at most MAX_RECORD_BYTES long
    and MAX_DEPTH deep (beyond: refused, said in `out.rejected`). Whether one was already delivered
    cannot be told, so all are returned: the hospital deduplicates by id."""
    budget = budget or _Budget(None, None)
    out = out or Salvage()
    found: dict[str, SalvagedRow] = {}
    for item in pagescan.scan(data, max_bytes=MAX_RECORD_BYTES, max_depth=MAX_DEPTH, late=budget.late):
        if item.value is None:
            budget.refuse(out, lambda: f"record at byte {item.start}: {_REFUSED[item.refused]}, not a check-in")
            continue
        body = item.value
        event_id, seq = body.get("id"), body.get("seq")
        if not isinstance(event_id, str) or not isinstance(seq, int) or isinstance(seq, bool) \
                or not isinstance(body.get("station"), str):
            continue
        try:
            uuid.UUID(event_id)
        except ValueError:
            continue
        found.setdefault(event_id, SalvagedRow(event_id, seq, 0.0, body, 0))
        if budget.full(len(found)):
            break
    return sorted(found.values(), key=lambda r: r.seq)


def salvage(path: Path | str, *, deadline_s: float | None = None, max_rows: int | None = None) -> Salvage:
    """Read what can be read of the outbox at `path` (a copy kept aside): directly; else with its
    header rebuilt in memory; else by a page scan for check-ins. `deadline_s` and `max_rows` stop it
    early (the daemon's bounds: `stopped` says which, and the file is never complete)."""
    budget = _Budget(deadline_s, max_rows)
    out = _salvage(lambda: sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=5),
                   budget)
    if out.rows or out.expected is not None or not out.error or budget.late():
        return budget.finish(out)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        out.error = f"{out.error}; {exc.strerror or exc}"
        return budget.finish(out)
    if size > MAX_REPAIR_BYTES:
        out.error = f"{out.error}; larger than {MAX_REPAIR_BYTES >> 20} MB: not repaired or scanned"
        return budget.finish(out)
    if size == 0:
        return budget.finish(out)
    repaired = _repaired(path, budget)
    if repaired is not None and (repaired.rows or repaired.expected is not None):
        repaired.method = "header repaired"
        return budget.finish(repaired)
    if budget.late():
        return budget.finish(out)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = scan_pages(data, budget, out)
    except (OSError, ValueError) as exc:
        out.error = f"{out.error}; {getattr(exc, 'strerror', None) or exc}"
        return budget.finish(out)
    if found:
        out = Salvage(rows=found, expected=None, complete=False, next_seq=max(r.seq for r in found) + 1,
                      method="page scan", rejected=out.rejected)
    return budget.finish(out)


def _repaired(path: Path | str, budget: _Budget) -> Salvage | None:
    """The salvage of the file with its header rebuilt, on a private copy-on-write map of it (the
    kept file never changes), handed to SQLite as an in-memory database; None when no page size
    fits, or when page 1 is no table b-tree page (the schema is gone: no query could work, and the
    file is not copied for nothing). SQLite's copy is the only one the process keeps."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as data:
            if len(data) <= 100 or data[100] not in (5, 13) or not repair_header(data):
                return None
            conn = sqlite3.connect(":memory:")
            conn.deserialize(data)
    except (OSError, ValueError, sqlite3.Error):
        return None
    return _salvage(lambda: conn, budget)


def _salvage(connect: Callable[[], sqlite3.Connection], budget: _Budget) -> Salvage:
    out = Salvage()
    try:
        conn = connect()
    except sqlite3.Error as exc:
        out.error = str(exc)
        return out
    conn.text_factory = lambda b: b.decode("utf-8", "replace")    # a damaged cell reads, never raises
    conn.set_progress_handler(budget.late, 10_000)                  # a query past the deadline stops
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
        pending = _try(conn, "SELECT seq, rowid FROM events INDEXED BY idx_events_delivered_at_seq "
                             "WHERE delivered_at IS NULL")
        out.expected = {r[0] for r in pending} if pending is not None else None
        good: dict[str, SalvagedRow] = {}
        seen: set[int] = set()
        counts = [0, 0]             # undelivered rows read, and those that made sense

        def take(r: tuple) -> None:
            if r[0] in seen or budget.full(len(good)):
                return
            seen.add(r[0])
            counts[0] += r[5] is None
            row, refused = _row(r)
            if refused:
                budget.refuse(out, lambda: f"row {r[0]}: payload {refused}, not a check-in")
            if row is not None:
                counts[1] += 1
                good.setdefault(row.id, row)

        table_complete = _walk(conn, take, budget)
        if not table_complete:
            # rows the walk stepped over, as the indexes list them (undelivered ones first)
            known = [r[1] for r in pending or []] + \
                [r[0] for r in _try(conn, "SELECT rowid FROM events INDEXED BY idx_events_seq") or []]
            for rowid in known:
                if rowid in seen or budget.late():
                    continue
                for r in _try(conn, f"SELECT {COLUMNS} FROM events WHERE rowid = ?", (rowid,)) or []:
                    take(r)
        out.rows = sorted(good.values(), key=lambda g: g.seq)
        saved = {g.seq for g in out.rows}
        if out.expected is not None:
            out.complete = out.expected <= saved
        else:  # no index to count by: complete only if the whole table read and every row made sense
            out.complete = table_complete and counts[1] == counts[0]
        if not seen and out.expected is None:
            out.error = "no table or index page of the outbox is readable"
    except sqlite3.Error as exc:  # the file could not be read at all (no header, not a database)
        out.error = str(exc)
    finally:
        conn.close()
    return out
