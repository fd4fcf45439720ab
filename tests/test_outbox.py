"""The outbox on a real SQLite file: durability settings, order, capacity, retention, corruption.

Also: purged names do not linger in free pages, and a damaged outbox is salvaged by its
content (by `queue import` and by the daemon), a kept one said once when nothing is left."""

import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from agent.outbox import Outbox, OutboxFull, uuid7
from support.daemon import cli, config


def body(i=0):
    return {"read_at": "2026-11-24T08:00:00+07:00", "clock_synced": True, "kind": "bhyt", "verdict": "ok",
            "problems": [], "card": {"card_number": f"DN47901234{i:05d}", "name": "Nguyễn Văn An"}}


@pytest.fixture
def box(tmp_path):
    ob = Outbox(tmp_path / "state" / "outbox.db", station="counter-01")
    yield ob
    ob.close()


def test_file_private_wal_and_full_sync(box):
    mode = stat.S_IMODE(os.stat(box.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(box.path.parent).st_mode) == 0o700
    assert box.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    box.put(body())
    for side in ("-wal", "-shm"):
        p = f"{box.path}{side}"
        if os.path.exists(p):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_put_is_committed_before_it_returns(box):
    row = box.put(body())
    # a second, independent connection sees it at once: it is in the database file, not a buffer
    other = sqlite3.connect(box.path)
    assert other.execute("SELECT id FROM events").fetchall() == [(row.id,)]
    other.close()


def test_envelope_ids_and_sequence(box):
    rows = [box.put(body(i)) for i in range(5)]
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert all(uuid.UUID(r.id).version == 7 for r in rows)
    p = rows[0].payload
    assert (p["schema"], p["id"], p["seq"], p["station"]) == ("1.2", rows[0].id, 1, "counter-01")
    assert p["card"]["name"] == "Nguyễn Văn An"


def test_uuid7_is_time_ordered():
    a = uuid7()
    time.sleep(0.002)
    b = uuid7()
    assert a < b and uuid.UUID(a).version == 7 and uuid.UUID(a).variant == uuid.RFC_4122


def test_sequence_survives_restart(tmp_path):
    path = tmp_path / "o.db"
    ob = Outbox(path, station="s")
    for i in range(3):
        ob.put(body(i))
    ob.close()
    ob = Outbox(path, station="s")
    assert ob.put(body()).seq == 4
    assert [r.seq for r in ob.pending()] == [1, 2, 3, 4]
    ob.close()


def test_pending_in_order_and_delivery(box):
    rows = [box.put(body(i)) for i in range(10)]
    assert box.mark_delivered([rows[0].id, rows[2].id]) == 2
    assert box.mark_delivered([rows[0].id]) == 0  # idempotent
    assert [r.seq for r in box.pending()] == [2, 4, 5, 6, 7, 8, 9, 10]
    assert [r.seq for r in box.pending(limit=3, after_seq=5)] == [6, 7, 8]
    assert [r.seq for r in box.iter_pending(batch=3)] == [2, 4, 5, 6, 7, 8, 9, 10]
    s = box.stats()
    assert s.queue_depth == 8 and s.delivered_total == 2 and s.oldest_undelivered_age_s >= 0


def test_capacity_refuses_loudly_and_drops_nothing(tmp_path):
    ob = Outbox(tmp_path / "o.db", station="s", max_events=10)
    ids = [ob.put(body(i)).id for i in range(10)]
    with pytest.raises(OutboxFull, match="10 undelivered"):
        ob.put(body(99))
    assert [r.id for r in ob.pending()] == ids
    ob.mark_delivered(ids[:1])  # one delivered: room again
    assert ob.put(body(100)).seq == 11
    ob.close()


def test_disk_space_floor(tmp_path):
    ob = Outbox(tmp_path / "o.db", station="s", min_free_mb=10**12)  # more than any disk has
    with pytest.raises(OutboxFull, match="disk almost full"):
        ob.put(body())
    assert ob.depth() == 0
    ob.close()


def test_retention_deletes_delivered_rows_only(tmp_path):
    ob = Outbox(tmp_path / "o.db", station="s", retention_s=3600)
    rows = [ob.put(body(i)) for i in range(4)]
    ob.mark_delivered([rows[0].id, rows[1].id])
    assert ob.purge(now=time.time() + 10) == 0          # delivered, but within retention
    assert ob.purge(now=time.time() + 3601) == 2        # delivered and old: gone
    assert ob.get(rows[0].id) is None
    assert [r.id for r in ob.pending()] == [rows[2].id, rows[3].id]
    assert ob.purge(now=time.time() + 10**9) == 0       # undelivered are never deleted
    assert ob.depth() == 2
    ob.close()


def test_corrupt_file_moved_aside_and_station_keeps_working(tmp_path, caplog):
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 200)
    ob = Outbox(path, station="s")
    aside = list(tmp_path.glob("o.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not")
    assert "moved aside" in caplog.text
    row = ob.put(body())
    assert row.seq > 1_000_000_000  # a replaced outbox continues the sequence from the clock
    assert ob.stats().recovered_from == str(aside[0])
    ob.close()


def test_corruption_found_while_running(tmp_path):
    path = tmp_path / "o.db"
    ob = Outbox(path, station="s")
    ob.put(body())
    # the file is clobbered under the running station (a failing SD card), then the next put
    ob.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with open(path, "r+b") as f:
        f.write(b"\0garbage" * 1024)
    ob.db.conn.execute("PRAGMA cache_size=0")  # make SQLite read the damaged pages
    row = ob.put(body(1))
    assert ob.get(row.id) is not None and ob.depth() == 1
    assert list(tmp_path.glob("o.db.corrupt-*"))
    ob.close()


def test_concurrent_put_and_deliver(box):
    stop = threading.Event()
    delivered = []

    def drain():
        while not stop.is_set() or box.depth():
            rows = box.pending(20)
            box.mark_delivered([r.id for r in rows])
            delivered.extend(r.seq for r in rows)
            time.sleep(0.001)
    t = threading.Thread(target=drain)
    t.start()
    for i in range(300):
        box.put(body(i))
    stop.set()
    t.join(20)
    assert sorted(delivered) == list(range(1, 301))


# --- 7: a damaged outbox is salvaged by content, not by its header --------------------------------

def _damaged_outbox(folder: Path, n: int = 28, delivered: int = 0) -> tuple[Path, list]:
    """An outbox of `n` green check-ins (the first `delivered` of them delivered), checkpointed,
    then kept aside as damaged."""
    from agent.checkin import checkin_body
    from agent.cards import read_card
    from agent.sim.demo import BHYT15, CCCD

    src = folder / "src" / "outbox.db"
    box = Outbox(src, station="counter-old")
    rows = [box.put(checkin_body(read_card(BHYT15 if i % 2 else CCCD))) for i in range(n)]
    box.mark_delivered([r.id for r in rows[:delivered]])
    box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    kept = folder / "state" / "outbox.db.corrupt-20261124T080000"
    kept.parent.mkdir(exist_ok=True)
    os.replace(src, kept)
    return kept, rows


@pytest.mark.parametrize("how", ["header", "header and page size", "first page"])
def test_queue_import_salvages_a_damaged_outbox_by_content(tmp_path, how):
    kept, rows = _damaged_outbox(tmp_path)
    with open(kept, "r+b") as f:
        f.write(os.urandom(16) if how == "header" else
                os.urandom(24) if how == "header and page size" else bytes(4096))
    conf = config(tmp_path, tmp_path / "state")
    Outbox(tmp_path / "state" / "outbox.db", station="counter-new").close()   # the fresh live outbox
    done = cli("queue", "-c", str(conf), "import", str(kept))
    assert "Traceback" not in done.stderr and "not a JSON object" not in done.stderr, done.stderr
    assert "28 check-in(s) queued" in done.stdout, done.stdout + done.stderr
    box = Outbox(tmp_path / "state" / "outbox.db", station="x", admin=True, readonly=True)
    pending = box.pending(100)
    box.close()
    assert [r.id for r in pending] == [r.id for r in rows]
    assert [r.payload for r in pending] == [r.payload for r in rows]


def test_the_daemon_salvages_a_live_outbox_whose_header_is_damaged(tmp_path):
    kept, rows = _damaged_outbox(tmp_path)
    live = tmp_path / "state" / "outbox.db"
    os.replace(kept, live)
    with open(live, "r+b") as f:
        f.write(bytes(16))
    box = Outbox(live, station="counter-old")
    rec = box.stats().recovery
    assert rec["saved"] == 28 and rec["lost"] == 0 and rec["kept"] is False, rec
    assert [r.id for r in box.pending(100)] == [r.id for r in rows]
    box.close()


# --- 10: a damaged file with nothing undelivered left in it is said once, not blinked forever ------

def test_a_kept_damaged_file_with_nothing_undelivered_is_said_once_and_not_a_fault(tmp_path, caplog):
    import logging
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station

    kept, rows = _damaged_outbox(tmp_path, n=6, delivered=6)        # every row already delivered
    pending_kept, pending = _damaged_outbox(tmp_path / "b", n=3)       # three never delivered
    pending_kept = os.replace(pending_kept, tmp_path / "state" / "outbox.db.corrupt-20261124T090000") or \
        tmp_path / "state" / "outbox.db.corrupt-20261124T090000"
    for f in (kept, pending_kept):
        with open(f, "r+b") as fh:
            fh.write(bytes(16))                                       # unreadable when it was kept
    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    station = Station(cfg, feedback=Feedback(NoOutput()))
    try:
        with caplog.at_level(logging.INFO):
            # the kept files are read off the caller's thread (agent.outbox.kept): until then, faults
            deadline = time.monotonic() + 20
            while any(str(kept) in f for f in station.faults(leds=True)) and time.monotonic() < deadline:
                time.sleep(0.1)
            for _ in range(3):
                faults = station.faults(leds=True)
        assert [f for f in faults if "damaged file" in f] == [
            f"outbox: damaged file {pending_kept} kept with check-ins that could not all be read; "
            f"see 'scanner-agent queue import {pending_kept}'"]
        said = [r.getMessage() for r in caplog.records if str(kept) in r.getMessage()]
        assert len(said) == 1 and "no undelivered check-in" in said[0], said
        # once its check-ins are imported, the other one is settled too
        station.outbox.import_rows([(r.id, r.payload, r.created_at, 0) for r in pending])
        deadline = time.monotonic() + 20
        while [f for f in station.faults(leds=True) if "damaged file" in f] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [f for f in station.faults(leds=True) if "damaged file" in f]
    finally:
        station.outbox.close()


# --- secure delete --------------------------------------------------------------------------------

def test_purged_names_do_not_linger_in_free_pages(tmp_path):
    box = Outbox(tmp_path / "o.db", station="s", retention_s=0)
    # set by the outbox itself, not left to how SQLite was built (Debian's default is on, others off)
    assert box.db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    marker = "Zzyzx Quagmire Unforgettable"
    rows = [box.put({"card": {"name": f"{marker} {i}"}}) for i in range(50)]
    box.mark_delivered([r.id for r in rows])
    assert box.purge(now=time.time() + 1) == 50
    box.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    data = b"".join(p.read_bytes() for p in tmp_path.glob("o.db*"))
    assert marker.encode() not in data


# --- issue 32, item 1: what is stored can be sent ---------------------------------------------------

def test_a_check_in_larger_than_the_station_publishes_is_never_stored(box):
    """Nothing that cannot be sent is queued: put refuses it (the station then shows the fault signal,
    never green: tests/test_station.py), and stores nothing."""
    from agent.event import MAX_CHECKIN_BYTES
    from agent.outbox import TooLarge

    first = box.put(body(1))
    huge = {**body(2), "card": {**body(2)["card"], "address": "x" * MAX_CHECKIN_BYTES}}
    with pytest.raises(TooLarge, match=f"larger than a check-in may be \\({MAX_CHECKIN_BYTES} bytes"):
        box.put(huge)
    assert box.depth() == 1 and [r.id for r in box.pending()] == [first.id]
    assert box.put(body(3)).seq == 2                     # no sequence number spent on it


@pytest.mark.parametrize("name", ["LARGEST_CCCD", "LARGEST_BHYT"])
def test_the_largest_check_in_a_card_can_give_is_stored_within_the_bound(box, name):
    """Every text field of the code at its cap, in 4-byte characters, and for a CCCD the old-ID field
    filled with digits up to the 8 192 characters the reader reads (one more and it reads none; the
    field itself is left out beyond 12 digits):
    stored, and within MAX_CHECKIN_BYTES, so no card read is ever refused for its size."""
    from datetime import date

    from agent.cards import read_card
    from agent.checkin import checkin_body
    from agent.event import MAX_CHECKIN_BYTES, encode
    from agent.cards.sanitize import MAX_PAYLOAD_CHARS
    from support import payloads

    text = getattr(payloads, name)
    read = read_card(text, today=date(2026, 1, 1))
    assert read.verdict == "ok", read.problems
    row = box.put(checkin_body(read, flags=["priority_child", "priority_elderly", "priority_merit",
                                            "other_facility", "repeat_today"]))
    size = len(encode(row.payload))
    assert size <= MAX_CHECKIN_BYTES
    if name == "LARGEST_CCCD":
        # the old-ID digits beyond 12 are not kept (the schema's bound), the raw text is
        assert len(text) == MAX_PAYLOAD_CHARS and 11_000 < size, size
        assert read_card(text + "1").verdict == "invalid"


def test_a_row_set_aside_is_kept_counted_exported_and_never_sent(box):
    """Undeliverable rows stay on disk (never deleted automatically), count in depth (max_events) and
    in stats, are listed and exported, but are no longer pending; `queue retry` puts one back,
    `queue remove` (after writing it to a file) is the only way it leaves."""
    rows = [box.put(body(i)) for i in range(3)]
    assert box.set_aside(rows[0].id, "the broker refused it: Packet too large")
    assert not box.set_aside(rows[0].id, "again")                       # once
    assert [r.id for r in box.pending()] == [r.id for r in rows[1:]]
    assert box.pending_keys(10) == [(r.id, r.seq) for r in rows[1:]]
    assert [r.id for r in box.iter_undelivered()] == [r.id for r in rows] and box.depth() == 3
    stats = box.stats()
    assert stats.queue_depth == 3 and stats.undeliverable == 1 and stats.to_dict()["undeliverable"] == 1
    assert type(stats).from_dict(stats.to_dict()) == stats                # the status file keeps it
    assert box.purge(time.time() + 10 ** 9) == 0                         # never purged
    box.mark_delivered([rows[1].id])
    assert not box.set_aside(rows[1].id, "delivered already")
    assert box.requeue(rows[0].id) and box.get(rows[0].id).undeliverable_at is None
    assert [r.id for r in box.pending()] == [rows[0].id, rows[2].id]
    assert box.remove([rows[0].id, "no-such-id"]) == 1 and box.get(rows[0].id) is None


def test_the_daemons_salvage_keeps_an_oversized_row_set_aside(box):
    """Rows salvaged from a damaged outbox are never dropped: one too large to send (let in by an older
    version) is kept, set aside, with the ones around it queued as before."""
    from agent.event import MAX_CHECKIN_BYTES

    other = Outbox(box.path.parent / "other.db", station="old")
    rows = [other.put(body(i)) for i in range(3)]
    other.close()
    wide = {**rows[1].payload, "card": {**rows[1].payload["card"], "address": "x" * MAX_CHECKIN_BYTES}}
    added, already = box.import_rows([(r.id, wide if r is rows[1] else r.payload, r.created_at, 0) for r in rows])
    assert (added, already) == (3, 0)
    assert [r.id for r in box.pending()] == [rows[0].id, rows[2].id]
    kept = box.get(rows[1].id)
    assert kept.payload == wide and kept.undeliverable_at and "larger than a check-in may be" in kept.undeliverable_reason


def test_an_outbox_made_before_the_undeliverable_columns_is_read_by_it_and_upgraded_by_the_daemon(tmp_path):
    """IT's commands change no schema: on an outbox an older version made (no undeliverable columns)
    they read as before; the daemon adds the columns when it opens it."""
    path = tmp_path / "state" / "outbox.db"
    made = Outbox(path, station="s")
    row = made.put(body())
    made.db.execute("ALTER TABLE events DROP COLUMN undeliverable_reason")
    made.db.execute("ALTER TABLE events DROP COLUMN undeliverable_at")
    made.close()
    admin = Outbox(path, station="s", admin=True)
    assert [r.id for r in admin.pending()] == [row.id] and [r.id for r in admin.undelivered()] == [row.id]
    assert admin.stats().undeliverable == 0 and not admin.set_aside(row.id, "x")
    assert admin.requeue(row.id) and admin.remove(["none"]) == 0
    admin.close()
    daemon = Outbox(path, station="s")
    assert daemon.set_aside(row.id, "too large") and daemon.stats().undeliverable == 1
    daemon.close()
