"""The durable outbox: one SQLite file (WAL, synchronous=FULL, mode 0600) of check-in events.

`put` returns only after the event is on disk: only then may the station show green. Rows are
delivered in sequence order and marked delivered only on the broker's acknowledgement; delivered
rows are deleted after the retention time (the station is no archive of patients' data);
undelivered rows are never deleted automatically. When full, `put` refuses loudly.
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
from agent.event import envelope   # the one event builder (no decoder import: admin commands stay light)
from agent.outbox.files import create_private, delete_files, make_private, match_owner, move_aside, refuse_links
from agent.outbox.errors import BUSY_TIMEOUT_S, Damaged, OutboxError, OutboxFull, damage_proof, error, is_busy
from agent.outbox.report import OutboxStats

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        self.recovered_from: Path | None = None
        self._damaged_seen: dict[tuple, list] = {}   # kept damaged file version -> [complete, ids, said]
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
        found = salvage(aside)
        added, _ = self.import_rows(found.for_import(), min_next_seq=(found.next_seq or 0))
        lost = found.lost
        record = {"at": time.time(), "file": str(aside), "reason": proof, "saved": added,
                  "lost": lost, "kept": not found.complete}
        self._set_meta("last_recovery", json.dumps(record))
        if found.complete:
            delete_files(aside)
        log.error("outbox %s was damaged (%s): moved aside, %d undelivered check-in(s) salvaged into a new "
                  "outbox, %s lost; %s", self.path, proof, added,
                  "none" if lost == 0 else "an unknown number" if lost is None else lost,
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
            created = time.time()
            conn.execute("INSERT INTO events (id, seq, created_at, payload, delivered_at, attempts) "
                         "VALUES (?, ?, ?, ?, NULL, 0)",
                         [event_id, seq, created, json.dumps(payload, ensure_ascii=False)])
            self._set_meta("next_seq", seq + 1)
        return Row(event_id, seq, created, payload, None, 0)

    def import_rows(self, rows: list[tuple[str, dict[str, Any], float, int]], *,
                    min_next_seq: int = 0) -> tuple[int, int]:
        """Queue check-ins from elsewhere (a damaged outbox, a replaced station's export) for sending,
        each with its original id and payload, exactly: (id, payload, created_at, attempts).

        Idempotent: an id already here is skipped. Local order follows the given order. Returns
        (added, already present)."""
        def run() -> tuple[int, int]:
            added = 0
            with self._transaction() as conn:
                seq = max(int(self._meta("next_seq") or 1), min_next_seq)
                for event_id, payload, created, attempts in rows:
                    cur = conn.execute("INSERT OR IGNORE INTO events (id, seq, created_at, payload, "
                                       "delivered_at, attempts) VALUES (?, ?, ?, ?, NULL, ?)",
                                       [event_id, seq, created, json.dumps(payload, ensure_ascii=False),
                                        attempts])
                    if cur.rowcount:
                        added += 1
                        seq += 1
                self._set_meta("next_seq", seq)
            return added, len(rows) - added
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
        """Mark a delivered event undelivered again (IT's forced resend)."""
        return self._guarded(lambda: self.db.execute(
            "UPDATE events SET delivered_at = NULL WHERE id = ?", [event_id]).rowcount == 1)

    def purge(self, now: float | None = None) -> int:
        """Delete delivered rows older than the retention time. Undelivered rows are never touched.
        secure_delete overwrites their pages, so names do not stay readable on the card."""
        cutoff = (now or time.time()) - self.retention_s
        return self._guarded(lambda: self.db.execute(
            "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at <= ?", [cutoff]).rowcount)

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, sql: str, params: list) -> list[Row]:
        def run() -> list[Row]:
            cur = self.db.execute(f"SELECT id, seq, created_at, payload, delivered_at, attempts FROM events {sql}",
                                  params)
            return [Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in cur.fetchall()]
        return self._guarded(run)

    def pending(self, limit: int = 100, after_seq: int = -1) -> list[Row]:
        """Undelivered events in sequence order, after `after_seq`."""
        return self._rows("WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?", [after_seq, limit])

    def pending_keys(self, limit: int) -> list[tuple[str, int]]:
        """(id, seq) of the oldest undelivered events, without reading their payloads."""
        return self._guarded(lambda: self.db.execute(
            "SELECT id, seq FROM events WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", [limit]).fetchall())

    def iter_pending(self, batch: int = 500) -> Iterator[Row]:
        after = -1
        while rows := self.pending(batch, after):
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
        (its salvage complete, each id here). The file is read once per version of it."""
        from agent.outbox.salvage import salvage

        try:
            st = os.lstat(path)
        except OSError:
            return False
        key = (str(path), st.st_size, st.st_mtime_ns)
        seen = self._damaged_seen
        if key not in seen:
            found = salvage(path)
            seen[key] = [found.complete and not found.error, [r.id for r in found.rows], False]
        entry = seen[key]
        complete, ids, said = entry
        if not complete:
            return False
        if not said:
            here = sum(self._guarded(lambda chunk=ids[i:i + 500]: self.db.execute(
                f"SELECT COUNT(*) FROM events WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchone()[0])
                for i in range(0, len(ids), 500))
            if here < len(ids):
                return False
            entry[2] = True
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
            last = self.db.execute("SELECT MAX(created_at) FROM events").fetchone()[0]
            return (depth, oldest, last, int(self._meta("delivered_total") or 0),
                    int(self._meta("failed_total") or 0))
        depth, oldest, last, delivered, failed = self._guarded(run)
        return OutboxStats(queue_depth=depth, oldest_undelivered_age_s=round(now - oldest, 1) if oldest else None,
                           last_checkin_at=last, delivered_total=delivered, failed_total=failed,
                           recovered_from=str(self.recovered_from) if self.recovered_from else None,
                           recovery=self.recovery(), damaged_files=[str(p) for p in self.damaged_files()])

    def summary(self) -> OutboxStats:
        """stats(), or OutboxStats.unreadable when the outbox cannot be read (for status and health)."""
        try:
            return self.stats()
        except OutboxError as exc:
            return OutboxStats.unreadable(exc)
