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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import sqlite_utils

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"


class OutboxFull(Exception):
    """The outbox refuses a check-in (too many undelivered, or too little disk). Nothing was dropped."""


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


def _is_corruption(exc: Exception) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "quick_check" in text


class Outbox:
    """Owns the outbox database. Thread-safe: the scan loop puts, the MQTT sender drains."""

    def __init__(self, path: Path | str, *, station: str, max_events: int = 50_000,
                 min_free_mb: int = 100, retention_s: float = 3600.0):
        self.path = Path(path)
        self.station = station
        self.max_events, self.min_free_mb, self.retention_s = max_events, min_free_mb, retention_s
        self._lock = threading.RLock()
        self.recovered_from: Path | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._move_aside(exc)
            self._open()

    # -- opening, corruption ---------------------------------------------------------------

    def _open(self) -> None:
        if not self.path.exists():
            # create it 0600 ourselves: sqlite would honour the umask (often 0644)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(self.path, 0o600)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            self.db = sqlite_utils.Database(conn)
            self._create()
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _create(self) -> None:
        events = self.db["events"]
        if not events.exists():
            events.create({"id": str, "seq": int, "created_at": float, "payload": str,
                           "delivered_at": float, "attempts": int}, pk="id", not_null={"seq", "payload"})
            events.create_index(["seq"], unique=True)
            events.create_index(["delivered_at", "seq"])
        meta = self.db["meta"]
        if not meta.exists():
            meta.create({"key": str, "value": str}, pk="key")
        if self._meta("next_seq") is None:
            # A fresh file continues the sequence from the clock when it replaces a corrupt one,
            # so seq never goes backwards for consumers; a first install starts at 1.
            start = int(time.time()) if self.recovered_from else 1
            self._set_meta("next_seq", start)
            self._set_meta("delivered_total", 0)

    def _move_aside(self, exc: Exception) -> None:
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                shutil.move(src, f"{aside}{suffix}")
        self.recovered_from = aside
        log.error("outbox database %s is unreadable (%s); moved aside to %s and started a new one",
                  self.path, exc, aside)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # -- meta ------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, str(value)])

    # -- writing ---------------------------------------------------------------------------

    def put(self, body: dict[str, Any]) -> Row:
        """Store a check-in; returns once it is committed to disk (fsync'd, synchronous=FULL).

        `body` holds read_at, clock_synced, kind, verdict, problems, card; the outbox adds the
        envelope (schema, id, seq, station). Raises OutboxFull, never drops anything stored.
        A database found corrupt here is moved aside and the check-in stored in a fresh one.
        """
        try:
            return self._put(body)
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            with self._lock:
                self.db.conn.close()
                self._move_aside(exc)
                self._open()
            return self._put(body)

    def _put(self, body: dict[str, Any]) -> Row:
        with self._lock:
            depth = self.depth()
            if depth >= self.max_events:
                raise OutboxFull(f"outbox full: {depth} undelivered check-ins (limit {self.max_events})")
            free_mb = shutil.disk_usage(self.path.parent).free / 1e6
            if free_mb < self.min_free_mb:
                raise OutboxFull(f"disk almost full: {free_mb:.0f} MB free (minimum {self.min_free_mb} MB)")
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = int(self._meta("next_seq"))
                event_id = uuid7()
                payload = {"schema": SCHEMA_VERSION, "id": event_id, "seq": seq, "station": self.station,
                           **body}
                created = time.time()
                conn.execute("INSERT INTO events (id, seq, created_at, payload, delivered_at, attempts) "
                             "VALUES (?, ?, ?, ?, NULL, 0)",
                             [event_id, seq, created, json.dumps(payload, ensure_ascii=False)])
                self._set_meta("next_seq", seq + 1)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return Row(event_id, seq, created, payload, None, 0)

    def mark_delivered(self, ids: list[str]) -> int:
        if not ids:
            return 0
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                marks = ",".join("?" * len(ids))
                n = conn.execute(f"UPDATE events SET delivered_at = ? WHERE delivered_at IS NULL "
                                 f"AND id IN ({marks})", [time.time(), *ids]).rowcount
                total = int(self._meta("delivered_total") or 0)
                self._set_meta("delivered_total", total + n)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return n

    def count_attempt(self, ids: list[str]) -> None:
        if ids:
            with self._lock:
                self.db.execute(f"UPDATE events SET attempts = attempts + 1 WHERE id IN "
                                f"({','.join('?' * len(ids))})", ids)

    def requeue(self, event_id: str) -> bool:
        """Mark a delivered event undelivered again (IT's forced resend)."""
        with self._lock:
            return self.db.execute("UPDATE events SET delivered_at = NULL WHERE id = ?",
                                   [event_id]).rowcount == 1

    def purge(self, now: float | None = None) -> int:
        """Delete delivered rows older than the retention time. Undelivered rows are never touched."""
        cutoff = (now or time.time()) - self.retention_s
        with self._lock:
            return self.db.execute("DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at <= ?",
                                   [cutoff]).rowcount

    # -- reading ---------------------------------------------------------------------------

    def _rows(self, sql: str, params: list) -> list[Row]:
        with self._lock:
            cur = self.db.execute(f"SELECT id, seq, created_at, payload, delivered_at, attempts FROM events {sql}",
                                  params)
            return [Row(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5]) for r in cur.fetchall()]

    def pending(self, limit: int = 100, after_seq: int = -1) -> list[Row]:
        """Undelivered events in sequence order, after `after_seq`."""
        return self._rows("WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?", [after_seq, limit])

    def iter_pending(self, batch: int = 500) -> Iterator[Row]:
        after = -1
        while rows := self.pending(batch, after):
            yield from rows
            after = rows[-1].seq

    def recent(self, limit: int = 50) -> list[Row]:
        return self._rows("ORDER BY seq DESC LIMIT ?", [limit])

    def get(self, event_id: str) -> Row | None:
        rows = self._rows("WHERE id = ?", [event_id])
        return rows[0] if rows else None

    def depth(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]

    def stats(self, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        with self._lock:
            depth, oldest = self.db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM events WHERE delivered_at IS NULL").fetchone()
            last = self.db.execute("SELECT MAX(created_at) FROM events").fetchone()[0]
            return {"queue_depth": depth,
                    "oldest_undelivered_age_s": round(now - oldest, 1) if oldest else None,
                    "delivered_total": int(self._meta("delivered_total") or 0),
                    "last_checkin_at": last,
                    "recovered_from": str(self.recovered_from) if self.recovered_from else None}
