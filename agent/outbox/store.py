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
import stat
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import sqlite_utils

from agent import paths
from agent.event import envelope   # the one event builder (no decoder import: admin commands stay light)

log = logging.getLogger(__name__)
T = TypeVar("T")


class OutboxError(Exception):
    """The outbox cannot do what was asked; the message names the path, the cause and the fix.

    Raised for conditions that are not proven damage (busy, permissions, disk full, I/O errors):
    nothing was moved, repaired or deleted."""


class OutboxBusy(OutboxError):
    """Another process held the outbox's lock for longer than the busy timeout. Nothing changed."""


class OutboxFull(OutboxError):
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


# SQLite primary result codes (sqlite3.Error.sqlite_errorcode & 0xFF).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 3, 5, 6, 8, 10, 11, 13, 14, 26
BUSY_TIMEOUT_S = 10.0
SIDE_FILES = ("", "-wal", "-shm")    # an SQLite database in WAL mode is these three files


class _Damaged(Exception):
    def __init__(self, proof: str):
        super().__init__(proof)
        self.proof = proof


def _code(exc: BaseException) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def damage_proof(path: Path, exc: BaseException) -> str | None:
    """SQLite's own proof that the file at `path` is damaged, or None when it is not proven.

    Only a corruption error confirmed by `PRAGMA quick_check` on a fresh connection (or a file
    SQLite cannot even recognise) counts: locked, busy, unopenable or full is never damage.
    """
    if _code(exc) not in (_CORRUPT, _NOTADB):
        return None
    try:
        verdict = _quick_check(path)
    except sqlite3.DatabaseError as again:
        return f"{again}" if _code(again) in (_CORRUPT, _NOTADB) else None
    return None if verdict == "ok" else f"quick_check: {verdict}"


def _owner_hint(path: Path) -> str:
    """For 'cannot open': name files of the outbox this user cannot write (root-owned leftovers)."""
    wrong = []
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), path.parent):
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
    code = _code(exc)
    if code in (_BUSY, _LOCKED):
        return (f"outbox {path} is locked by another process (waited {BUSY_TIMEOUT_S:.0f} s); "
                "nothing was changed: try again, or find the process holding it (fuser)")
    if code == _FULL:
        return f"disk full: cannot write the outbox {path} (SQLite: {exc}); free space on the card"
    if code in (_READONLY, _CANTOPEN, _PERM):
        return f"cannot open the outbox {path} for writing (SQLite: {exc}){_owner_hint(path)}"
    if code == _IOERR:
        return f"I/O error on the outbox {path} (SQLite: {exc}): the SD card may be failing"
    if code in (_CORRUPT, _NOTADB):
        return f"SQLite reported damage in {path} that quick_check does not confirm ({exc}); nothing moved"
    return f"outbox {path}: {exc}"


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
        raise _error(path, exc) from None


def delete_files(path: Path | str) -> None:
    """Remove a database and its -wal/-shm files (those that exist)."""
    for suffix in SIDE_FILES:
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def _on_regular_file(path: Path, act: Callable[[str, os.stat_result], None]) -> None:
    """Run `act(fd_path, stat)` on `path` when it is a regular file with one name (no link, FIFO,
    device or hard link to a file elsewhere); otherwise nothing. The file is pinned with an O_PATH
    descriptor opened without following links, and acted on through /proc/self/fd (which names
    that very file): an O_PATH descriptor, unlike a normal one, does not drop SQLite's POSIX locks
    on the file when it is closed."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            act(f"/proc/self/fd/{fd}", st)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_links(path: Path) -> None:
    """The outbox and its -wal/-shm must be regular files: a link there may point anywhere (the
    service account could have planted it), and SQLite or a root command would act on its target."""
    for suffix in SIDE_FILES:
        p = Path(f"{path}{suffix}")
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise OutboxError(f"{p} is {kind}: refusing to open the outbox through it (nothing was "
                              f"changed); remove it if you did not put it there ('sudo rm {p}')")


def unreadable(exc: BaseException) -> dict[str, Any]:
    """What stats() gives when the outbox cannot be read: the figures unknown, and why."""
    return {"queue_depth": None, "oldest_undelivered_age_s": None, "last_checkin_at": None, "error": str(exc)}


def _error(path: Path, exc: BaseException) -> OutboxError:
    cls = OutboxBusy if _code(exc) in (_BUSY, _LOCKED) else OutboxError
    return cls(explain(path, exc))


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
        _refuse_links(self.path)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._open()
                break
            except _Damaged as exc:  # SQLite's own quick_check failed: proven
                self._recover(exc.proof)
                break
            except sqlite3.DatabaseError as exc:
                if _code(exc) in (_BUSY, _LOCKED) and time.monotonic() < deadline:
                    log.warning("outbox %s is locked by another process; waiting", self.path)
                    time.sleep(1.0)
                    continue
                proof = None if self.admin else damage_proof(self.path, exc)
                if proof is None:
                    raise _error(self.path, exc) from None
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
            # create it 0600 ourselves: sqlite would honour the umask (often 0644)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
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
                    raise _Damaged(f"quick_check: {check}")
            self.db = sqlite_utils.Database(conn)
            if not self.admin:
                self._create()
        except BaseException:
            conn.close()
            raise
        if not self.admin:
            for suffix in SIDE_FILES:
                _on_regular_file(Path(f"{self.path}{suffix}"), lambda at, st: os.chmod(at, 0o600))

    def _match_owner(self) -> None:
        """Run by root (sudo), SQLite may create -wal/-shm owned by root, which the service user then
        cannot open: give them the outbox's owner. Read-only commands change nothing; a link or
        anything but a regular file is never touched (the service account may have planted it),
        and the owner is changed on the file pinned by a descriptor opened without following links."""
        if os.geteuid() != 0 or self.readonly:
            return
        try:
            owner = os.lstat(self.path)
        except OSError:
            return
        if not stat.S_ISREG(owner.st_mode):
            return

        def give(at: str, st: os.stat_result) -> None:
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(at, owner.st_uid, owner.st_gid)
        for suffix in ("-wal", "-shm"):
            _on_regular_file(Path(f"{self.path}{suffix}"), give)

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

        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}{paths.ASIDE}{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}{paths.ASIDE}{stamp}-{n}")
        for suffix in SIDE_FILES:
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{aside}{suffix}")
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
                    raise _error(self.path, exc) from exc
                try:
                    self.db.conn.close()
                except sqlite3.Error:
                    pass
                self._recover(proof)
            try:
                return op()
            except sqlite3.DatabaseError as exc:
                raise _error(self.path, exc) from exc

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
        field = {"bhyt": "$.card.card_number", "cccd": "$.card.id_number"}.get(kind)
        if field is None or not number:
            return False
        return self._guarded(lambda: self.db.execute(
            "SELECT 1 FROM events WHERE created_at >= ? AND json_extract(payload, '$.kind') = ? "
            "AND json_extract(payload, ?) = ? LIMIT 1", [since, kind, field, number]).fetchone() is not None)

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

    def stats(self, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()

        def run() -> dict[str, Any]:
            depth, oldest = self.db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM events WHERE delivered_at IS NULL").fetchone()
            last = self.db.execute("SELECT MAX(created_at) FROM events").fetchone()[0]
            return {"queue_depth": depth,
                    "oldest_undelivered_age_s": round(now - oldest, 1) if oldest else None,
                    "delivered_total": int(self._meta("delivered_total") or 0),
                    "failed_total": int(self._meta("failed_total") or 0),
                    "last_checkin_at": last,
                    "recovered_from": str(self.recovered_from) if self.recovered_from else None}
        out = self._guarded(run)
        out["recovery"] = self.recovery()
        out["damaged_files"] = [str(p) for p in self.damaged_files()]
        return out

    def summary(self) -> dict[str, Any]:
        """stats(), or `unreadable()` when the outbox cannot be read (for status and health)."""
        try:
            return self.stats()
        except OutboxError as exc:
            return unreadable(exc)
