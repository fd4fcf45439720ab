"""The durable outbox: one SQLite file (WAL, synchronous=FULL, mode 0600) of check-in events.

`put` returns only after the event is on disk: only then may the station show green. Rows are
delivered in sequence order and marked delivered only on the broker's acknowledgement; delivered
rows are deleted after the retention time (the station is no archive of patients' data);
undelivered rows are never deleted automatically. When full, `put` refuses loudly; a check-in
larger than the station publishes (agent.event.MAX_CHECKIN_BYTES) is never stored to be sent.

A row the broker will not take is set aside as undeliverable (`set_aside`): kept, counted and
exported like any undelivered row, but no longer sent, so it never holds up the rows behind it.
Only IT removes a row (`remove`, after `queue remove` has written it to a file).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlite_utils

from agent import paths
from agent.cards.model import NUMBER_FIELD
# the one event builder (no decoder import: admin commands stay light)
from agent.event import MAX_CHECKIN_BYTES, encode, envelope
from agent.outbox.files import create_private, delete_files, make_private, match_owner, move_aside, refuse_links
from agent.outbox.errors import (BUSY_TIMEOUT_S, Damaged, OutboxError, OutboxFull, TooLarge, damage_proof, error,
                                 is_busy)
from agent.outbox.kept import SETTLE_WAIT_S, KeptCheck
from agent.outbox.report import OutboxStats

log = logging.getLogger(__name__)
T = TypeVar("T")
IMPORT_BATCH = 500      # rows per transaction of an import: the station's own check-ins go in between
#: the most the daemon spends salvaging its damaged outbox (at start, or in a put or the sender,
#: under the outbox's lock): what it did not read stays in the kept file, a fault until IT's
#: `queue import`; well under the watchdog's 30 s and systemd's start timeout
RECOVER_S = 10.0


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, then random bits.

    Python gains uuid.uuid7 in 3.14; the station runs on 3.11.
    """
    ms = time.time_ns() // 1_000_000
    value = (ms & (2**48 - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)          # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)          # RFC 4122 variant
    return str(uuid.UUID(int=value))


@dataclass(frozen=True)
class Row:
    id: str
    seq: int
    created_at: float
    payload: dict[str, Any]
    delivered_at: float | None
    attempts: int
    #: set aside as undeliverable (the broker will not take it): when, and why; None while queued
    undeliverable_at: float | None = None
    undeliverable_reason: str | None = None


def too_large(size: int) -> str:
    """Why a check-in of `size` bytes is not stored to be sent (no personal data in it)."""
    return f"{size} bytes, larger than a check-in may be ({MAX_CHECKIN_BYTES} bytes, as published)"


class Outbox:
    """Owns the outbox database. Thread-safe: the scan loop puts, the MQTT sender drains.

    The daemon opens it normally: it is created when missing, and a file SQLite proves damaged is
    moved aside, its readable undelivered rows salvaged into a fresh one. Admin commands pass
    `admin=True` (never create, move or repair) and `readonly=True` when they only read.
    """

    def __init__(self, path: Path | str, *, station: str, max_events: int = 50_000,
                 min_free_mb: int = 100, retention_s: float = 3600.0, admin: bool = False,
                 readonly: bool = False, wait_s: float = 0.0):
        self.path = Path(path)
        self.station = station
        self.max_events, self.min_free_mb, self.retention_s = max_events, min_free_mb, retention_s
        self.admin, self.readonly = admin or readonly, readonly
        self._lock = threading.RLock()
        self._aside: bool | None = None   # the file has the undeliverable columns (older files gain them)
        self.recovered_from: Path | None = None
        self._damaged_seen: dict[tuple, KeptCheck] = {}   # kept damaged file version -> the look into it
        self._seen_lock = threading.Lock()
        if self.admin and not self.path.exists():
            raise OutboxError(f"no outbox at {self.path} (is state_dir right, and has the station run?)")
        if not self.admin:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise OutboxError(f"cannot create the state directory {self.path.parent}: "
                                  f"{exc.strerror or exc}") from None
        refuse_links(self.path)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._open()
                break
            except Damaged as exc:  # SQLite's own quick_check failed: proven
                self._recover(exc.proof)
                break
            except sqlite3.DatabaseError as exc:
                if is_busy(exc) and time.monotonic() < deadline:
                    log.warning("outbox %s is locked by another process; waiting", self.path)
                    time.sleep(1.0)
                    continue
                proof = None if self.admin else damage_proof(self.path, exc)
                if proof is None:
                    raise error(self.path, exc) from None
                self._recover(proof)
                break
        self._match_owner()

    # -- opening, damage ---------------------------------------------------------------------

    def _open(self) -> None:
        self._aside = None
        if self.readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                   isolation_level=None, timeout=BUSY_TIMEOUT_S)
            self.db = sqlite_utils.Database(conn)
            return
        if not self.path.exists() and not self.admin:
            create_private(self.path)
        uri = f"file:{self.path}?mode={'rw' if self.admin else 'rwc'}"
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None,
                               timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")  # purged names do not linger in free pages
            if not self.admin:
                check = conn.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise Damaged(f"quick_check: {check}")
            self.db = sqlite_utils.Database(conn)
            if not self.admin:
                self._create()
        except BaseException:
            conn.close()
            raise
        if not self.admin:
            make_private(self.path)

    def _match_owner(self) -> None:
        """-wal/-shm a root command made get the outbox's owner (agent.outbox.files); read-only
        commands change nothing."""
        if not self.readonly:
            match_owner(self.path)

    def _create(self) -> None:
        events = self.db["events"]
        if not events.exists():
            events.create({"id": str, "seq": int, "created_at": float, "payload": str,
                           "delivered_at": float, "attempts": int}, pk="id", not_null={"seq", "payload"})
            events.create_index(["seq"], unique=True)
            events.create_index(["delivered_at", "seq"])
        if "signalled_at" not in events.columns_dict:   # added in 0.x: outboxes made before gain it
            events.add_column("signalled_at", float)
        if "undeliverable_at" not in events.columns_dict:   # added for issue 32: older outboxes gain them
            events.add_column("undeliverable_at", float)
            events.add_column("undeliverable_reason", str)
        meta = self.db["meta"]
        if not meta.exists():
            meta.create({"key": str, "value": str}, pk="key")
        if self._meta("next_seq") is None:
            # A fresh file continues the sequence from the clock when it replaces a damaged one,
            # so seq never goes backwards for consumers; a first install starts at 1.
            start = int(time.time()) if self.recovered_from else 1
            self._set_meta("next_seq", start)
            self._set_meta("delivered_total", 0)

    def _recover(self, proof: str) -> None:
        """The file is proven damaged: move it aside, start afresh, salvage its undelivered rows
        into the new file (original ids and payloads), and delete it only if every one was saved."""
        from agent.outbox.salvage import salvage

        aside = move_aside(self.path)
        self.recovered_from = aside
        self._open()
        found = salvage(aside, deadline_s=RECOVER_S, max_rows=self.max_events)
        added, _ = self.import_rows(found.for_import(), min_next_seq=(found.next_seq or 0))
        lost = found.lost
        record = {"at": time.time(), "file": str(aside), "reason": proof, "saved": added,
                  "lost": lost, "kept": not found.complete, "stopped": found.stopped}
        self._set_meta("last_recovery", json.dumps(record))
        if found.complete:
            delete_files(aside)
        log.error("outbox %s was damaged (%s): moved aside, %d undelivered check-in(s) salvaged into a new "
                  "outbox, %s lost%s; %s", self.path, proof, added,
                  "none" if lost == 0 else "an unknown number" if lost is None else lost,
                  f" (reading {found.stopped}: the rest is still in the kept file)" if found.stopped else "",
                  "damaged file deleted" if found.complete else
                  f"damaged file kept as {aside} for 'scanner-agent queue import'")

    def _guarded(self, op: Callable[[], T]) -> T:
        """Run one operation; a damage SQLite proves is recovered from once, anything else explained."""
        with self._lock:
            try:
                return op()
            except sqlite3.DatabaseError as exc:
                proof = None if self.admin else damage_proof(self.path, exc)
                if proof is None:
                    raise error(self.path, exc) from exc
                try:
                    self.db.conn.close()
                except sqlite3.Error:
                    pass
                self._recover(proof)
            try:
                return op()
            except sqlite3.DatabaseError as exc:
                raise error(self.path, exc) from exc

    def _has_aside(self) -> bool:
        """Whether the file has the undeliverable columns: the daemon adds them when it opens an older
        outbox; an admin command (which changes no schema) on one it has not opened yet sees none set
        aside. Run inside an operation (its errors are _guarded's)."""
        if self._aside is None:
            self._aside = "undeliverable_at" in self.db["events"].columns_dict
        return self._aside

    def _queued(self) -> str:
        """The SQL condition of a row waiting to be sent: undelivered and not set aside."""
        return "delivered_at IS NULL AND undeliverable_at IS NULL" if self._has_aside() else "delivered_at IS NULL"

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
        self._match_owner()

    # -- meta ------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, str(value)])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back on error (if SQLite has not already done so,
        as it does on a full disk: a second ROLLBACK would hide the real cause)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    # -- writing ---------------------------------------------------------------------------

    def put(self, body: dict[str, Any]) -> Row:
        """Store a check-in; returns once it is committed to disk (fsync'd, synchronous=FULL).

        `body` holds read_at, clock_synced, kind, verdict, problems, card; the outbox adds the
        envelope (schema, id, seq, station). Raises OutboxFull or OutboxError, never drops anything
        stored. A file SQLite proves damaged is recovered from first (see _recover).
        """
        return self._guarded(lambda: self._put(body))

    def _put(self, body: dict[str, Any]) -> Row:
        depth = self.depth()
        if depth >= self.max_events:
            raise OutboxFull(f"outbox full: {depth} undelivered check-ins (limit {self.max_events})")
        free_mb = shutil.disk_usage(self.path.parent).free / 1e6
        if free_mb < self.min_free_mb:
            raise OutboxFull(f"disk almost full: {free_mb:.0f} MB free (minimum {self.min_free_mb} MB)")
        with self._transaction() as conn:
            seq = int(self._meta("next_seq"))
            event_id = uuid7()
            payload = envelope(body, event_id=event_id, seq=seq, station=self.station)
            data = encode(payload)
            if len(data) > MAX_CHECKIN_BYTES:   # it could never be sent: no green for it
                raise TooLarge(f"check-in not stored: {too_large(len(data))}")
            created = time.time()
            conn.execute("INSERT INTO events (id, seq, created_at, payload, delivered_at, attempts) "
                         "VALUES (?, ?, ?, ?, NULL, 0)",
                         [event_id, seq, created, data.decode("utf-8")])
            self._set_meta("next_seq", seq + 1)
        return Row(event_id, seq, created, payload, None, 0)

    def import_rows(self, rows: list[tuple[str, dict[str, Any], float, int]], *,
                    min_next_seq: int = 0) -> tuple[int, int]:
        """Queue check-ins from elsewhere (a damaged outbox, a replaced station's export) for sending,
        each with its original id and payload, exactly: (id, payload, created_at, attempts).

        Idempotent: an id already here is skipped. Local order follows the given order. A row
        larger than a check-in may be is kept, set aside as undeliverable (the daemon's own salvage
        loses nothing; `queue import` refuses such rows before they get here; in an outbox the
        daemon has not opened since its upgrade, the sender sets it aside). Returns (added,
        already present)."""
        added = already = 0
        for start in range(0, len(rows), IMPORT_BATCH):
            a, b, _ = self.import_batch(rows[start:start + IMPORT_BATCH], min_next_seq=min_next_seq)
            added, already = added + a, already + b
        return added, already

    def import_batch(self, rows: list[tuple[str, dict[str, Any], float, int]], *, min_next_seq: int = 0,
                     room: int | None = None) -> tuple[int, int, int]:
        """import_rows for one batch, in one transaction, stopping before undelivered rows would
        exceed `room` (None: no limit). Returns (added, already present, rows of `rows` taken):
        fewer taken than given means the outbox reached `room`."""
        def run() -> tuple[int, int, int]:
            added = taken = 0
            with self._transaction() as conn:
                seq = max(int(self._meta("next_seq") or 1), min_next_seq)
                depth = None if room is None else conn.execute(
                    "SELECT COUNT(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]
                for event_id, payload, created, attempts in rows:
                    if depth is not None and depth >= room:
                        if conn.execute("SELECT 1 FROM events WHERE id = ?", [event_id]).fetchone() is None:
                            break
                        taken += 1       # already here: an import run again goes past what it queued
                        continue
                    data = encode(payload)
                    cur = conn.execute("INSERT OR IGNORE INTO events (id, seq, created_at, payload, delivered_at, "
                                       "attempts) VALUES (?, ?, ?, ?, NULL, ?)",
                                       [event_id, seq, created, data.decode("utf-8"), attempts])
                    taken += 1
                    if not cur.rowcount:
                        continue
                    if len(data) > MAX_CHECKIN_BYTES and self._has_aside():   # kept, never sent
                        conn.execute("UPDATE events SET undeliverable_at = ?, undeliverable_reason = ? WHERE id = ?",
                                     [time.time(), too_large(len(data)), event_id])
                        log.error("outbox: imported check-in #%d (%s) set aside as undeliverable: %s", seq,
                                  event_id, too_large(len(data)))
                    added += 1
                    seq += 1
                    if depth is not None:
                        depth += 1
                self._set_meta("next_seq", seq)
            return added, taken - added, taken
        return self._guarded(run)

    def mark_delivered(self, ids: list[str]) -> int:
        if not ids:
            return 0

        def run() -> int:
            with self._transaction() as conn:
                marks = ",".join("?" * len(ids))
                n = conn.execute(f"UPDATE events SET delivered_at = ? WHERE delivered_at IS NULL "
                                 f"AND id IN ({marks})", [time.time(), *ids]).rowcount
                total = int(self._meta("delivered_total") or 0)
                self._set_meta("delivered_total", total + n)
            return n
        return self._guarded(run)

    def count_refused(self) -> None:
        """A publish the broker refused (an ACL, say): counted over the outbox's life, like delivered."""
        def run() -> None:
            with self._transaction():
                self._set_meta("failed_total", int(self._meta("failed_total") or 0) + 1)
        self._guarded(run)

    def mark_signalled(self, event_id: str) -> bool:
        """Record that the hospital's verdict on this check-in was shown; False when it already was
        (one signal per check-in, across restarts, for as long as the row is kept)."""
        return self._guarded(lambda: self.db.execute(
            "UPDATE events SET signalled_at = ? WHERE id = ? AND signalled_at IS NULL",
            [time.time(), event_id]).rowcount == 1)

    def count_attempt(self, ids: list[str]) -> None:
        if ids:
            self._guarded(lambda: self.db.execute(
                f"UPDATE events SET attempts = attempts + 1 WHERE id IN ({','.join('?' * len(ids))})", ids))

    def requeue(self, event_id: str) -> bool:
        """Mark a delivered event undelivered again, or put one set aside back in the queue (IT's
        forced resend: after the broker's limit was raised, say)."""
        def run() -> bool:
            also = ", undeliverable_at = NULL, undeliverable_reason = NULL" if self._has_aside() else ""
            return self.db.execute(f"UPDATE events SET delivered_at = NULL{also} WHERE id = ?",
                                   [event_id]).rowcount == 1
        return self._guarded(run)

    def set_aside(self, event_id: str, reason: str) -> bool:
        """Set an undelivered row aside as undeliverable (the broker will not take it, `reason` says
        why): kept, counted, exported, no longer sent. False when it is not queued (delivered, gone,
        already set aside)."""
        def run() -> bool:
            if not self._has_aside():   # an admin command on an outbox made before 0.9: nothing to do
                return False
            return self.db.execute(
                "UPDATE events SET undeliverable_at = ?, undeliverable_reason = ? WHERE id = ? "
                "AND delivered_at IS NULL AND undeliverable_at IS NULL",
                [time.time(), reason[:300], event_id]).rowcount == 1
        return self._guarded(run)

    def remove(self, ids: list[str]) -> int:
        """Delete these rows whatever their state (IT's `queue remove`, which has written them to a
        file first): the only way an undelivered row leaves the outbox. Returns how many."""
        def run() -> int:
            with self._transaction() as conn:
                return sum(conn.execute("DELETE FROM events WHERE id = ?", [i]).rowcount for i in ids)
        return self._guarded(run)

    def purge(self, now: float | None = None) -> int:
        """Delete delivered rows older than the retention time. Undelivered rows are never touched.
        secure_delete overwrites their pages, so names do not stay readable on the card."""
        cutoff = (now or time.time()) - self.retention_s
        return self._guarded(lambda: self.db.execute(
            "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at <= ?", [cutoff]).rowcount)

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, sql: str | Callable[[], str], params: list) -> list[Row]:
        """Rows selected by `sql` (or by what `sql()` returns, run inside the operation)."""
        def run() -> list[Row]:
            aside = ", undeliverable_at, undeliverable_reason" if self._has_aside() else ""
            where = sql() if callable(sql) else sql
            cur = self.db.execute(f"SELECT id, seq, created_at, payload, delivered_at, attempts{aside} FROM events "
                                  f"{where}", params)
            return [Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], *r[6:]) for r in cur.fetchall()]
        return self._guarded(run)

    def pending(self, limit: int = 100, after_seq: int = -1) -> list[Row]:
        """Events waiting to be sent (undelivered, not set aside) in sequence order, after `after_seq`."""
        return self._rows(lambda: f"WHERE {self._queued()} AND seq > ? ORDER BY seq LIMIT ?", [after_seq, limit])

    def pending_keys(self, limit: int) -> list[tuple[str, int]]:
        """(id, seq) of the oldest events waiting to be sent, without reading their payloads."""
        return self._guarded(lambda: self.db.execute(
            f"SELECT id, seq FROM events WHERE {self._queued()} ORDER BY seq LIMIT ?", [limit]).fetchall())

    def iter_pending(self, batch: int = 500) -> Iterator[Row]:
        after = -1
        while rows := self.pending(batch, after):
            yield from rows
            after = rows[-1].seq

    def undelivered(self, limit: int = 100, after_seq: int = -1) -> list[Row]:
        """Every undelivered event, set aside or not, in sequence order (what IT lists and exports)."""
        return self._rows("WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?", [after_seq, limit])

    def iter_undelivered(self, batch: int = 500) -> Iterator[Row]:
        after = -1
        while rows := self.undelivered(batch, after):
            yield from rows
            after = rows[-1].seq

    def checked_in_since(self, kind: str, number: str, since: float) -> bool:
        """Is a check-in of this card (`kind` bhyt by card_number, cccd by id_number) stored since
        `since` (epoch seconds), delivered or not? Sees what retention has kept (repeat_today)."""
        field = NUMBER_FIELD.get(kind)
        if field is None or not number:
            return False
        field = f"$.card.{field}"
        return self._guarded(lambda: self.db.execute(
            "SELECT 1 FROM events WHERE created_at >= ? AND json_extract(payload, '$.kind') = ? "
            "AND json_extract(payload, ?) = ? LIMIT 1", [since, str(kind), field, number]).fetchone() is not None)

    def recent(self, limit: int = 50) -> list[Row]:
        return self._rows("ORDER BY seq DESC LIMIT ?", [limit])

    def get(self, event_id: str) -> Row | None:
        rows = self._rows("WHERE id = ?", [event_id])
        return rows[0] if rows else None

    def depth(self) -> int:
        """Undelivered events, set aside or not (what `max_events` limits: they are all on disk)."""
        return self._guarded(lambda: self.db["events"].count_where("delivered_at IS NULL"))

    def damaged_files(self) -> list[Path]:
        """Outbox files moved aside as damaged and kept because not every row could be salvaged,
        less those proven to hold no undelivered check-in that is not already in this outbox
        (said once in the log, then no longer a fault: an alarm with nothing to do never ends)."""
        kept = paths.damaged_outboxes(self.path)
        if self.admin:
            return kept
        return [p for p in kept if not self._settled(p)]

    def _settled(self, path: Path) -> bool:
        """Whether every undelivered check-in the damaged file at `path` can hold is in this outbox
        (its salvage complete, each id here). The file is read once per version of it, off the
        caller's thread (agent.outbox.kept): until it has been read, it is not settled."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._seen_lock:
            check = self._damaged_seen.get(key)
            first = check is None
            if first:
                check = self._damaged_seen[key] = KeptCheck(path, self.max_events).start()
        if not check.ready(SETTLE_WAIT_S if first else 0) or not check.complete:
            return False
        ids = check.ids
        if not check.said:
            here = sum(self._guarded(lambda chunk=ids[i:i + 500]: self.db.execute(
                f"SELECT COUNT(*) FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchone()[0])
                for i in range(0, len(ids), 500))
            if here < len(ids):
                return False
            check.said = True
            log.warning("outbox: damaged file %s holds no undelivered check-in that is not already in the "
                        "outbox (%d read from it, all here): nothing to import; it may be deleted "
                        "('sudo rm %s*')", path, len(ids), path)
        return True

    def recovery(self) -> dict[str, Any] | None:
        """The last salvage from a damaged file (kept in the outbox, so it survives restarts)."""
        try:
            raw = self._guarded(lambda: self._meta("last_recovery"))
            return json.loads(raw) if raw else None
        except (OutboxError, ValueError):
            return None

    def stats(self, now: float | None = None) -> OutboxStats:
        now = now or time.time()

        def run() -> tuple[Any, ...]:
            depth, oldest = self.db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM events WHERE delivered_at IS NULL").fetchone()
            aside = self.db.execute("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL AND "
                                    "undeliverable_at IS NOT NULL").fetchone()[0] if self._has_aside() else 0
            last = self.db.execute("SELECT MAX(created_at) FROM events").fetchone()[0]
            return (depth, oldest, aside, last, int(self._meta("delivered_total") or 0),
                    int(self._meta("failed_total") or 0))
        depth, oldest, aside, last, delivered, failed = self._guarded(run)
        return OutboxStats(queue_depth=depth, oldest_undelivered_age_s=round(now - oldest, 1) if oldest else None,
                           last_checkin_at=last, delivered_total=delivered, failed_total=failed, undeliverable=aside,
                           recovered_from=str(self.recovered_from) if self.recovered_from else None,
                           recovery=self.recovery(), damaged_files=[str(p) for p in self.damaged_files()])

    def summary(self) -> OutboxStats:
        """stats(), or OutboxStats.unreadable when the outbox cannot be read (for status and health)."""
        try:
            return self.stats()
        except OutboxError as exc:
            return OutboxStats.unreadable(exc)
