"""Salvage from a damaged outbox bounded by what the file holds (issue 32 items 2 and 6): a rowid
near 2**62, a record nested 950 deep, megabytes of nested text and a large file are read in bounded
time and memory, with a clear refusal where a record is beyond the bounds; and a station with such
files beside its outbox goes on scanning and stops on SIGTERM.

Every damaged file here is a real SQLite outbox damaged on disk, or real bytes; nothing is mocked.
Salvage runs in a subprocess or a thread with a time limit, so that code that walks for ever fails
the test instead of hanging it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.outbox import Outbox
from support.daemon import ROOT, Daemon, cli, config

HUGE = 2 ** 62 + 12345
LIMIT_S = 20.0        # generous: the bounded salvage takes well under a second here


def _outbox(path: Path, n: int) -> list:
    """An outbox of `n` check-ins at `path`, checkpointed (everything in the main file)."""
    from agent.cards import read_card
    from agent.checkin import checkin_body
    from agent.sim.demo import BHYT15, CCCD

    path.parent.mkdir(parents=True, exist_ok=True)
    box = Outbox(path, station="counter-old")
    rows = [box.put(checkin_body(read_card(BHYT15 if i % 2 else CCCD))) for i in range(n)]
    box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    return rows


def _damaged_with_huge_rowids(path: Path, n: int = 100) -> tuple[list, set[str]]:
    """An outbox of `n` check-ins whose last two rows have rowids 2**40 and near 2**62 (SQLite takes
    any 64-bit rowid, and a damaged page can show one), with a leaf page of the table a third of the
    way along turned to garbage. Returns the rows and the ids that were on that page."""
    rows = _outbox(path, n)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE events SET rowid = ? WHERE seq = ?", (2 ** 40, rows[-2].seq))
    conn.execute("UPDATE events SET rowid = ? WHERE seq = ?", (HUGE, rows[-1].seq))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # the leaves in key order (dbstat's path), their cell counts, and so the ids on each
    leaves = conn.execute("SELECT pageno, ncell FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' "
                          "ORDER BY path").fetchall()
    ids = [r[0] for r in conn.execute("SELECT id FROM events ORDER BY rowid")]
    k = len(leaves) // 3
    before = sum(c for _, c in leaves[:k])
    on_page = set(ids[before:before + leaves[k][1]])
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((leaves[k][0] - 1) * size)
        f.write(os.urandom(size))
    assert on_page and len(leaves) > 3
    return rows, on_page


def _in_thread(fn, limit: float = LIMIT_S):
    """fn() in a thread; fails the test when it has not returned within `limit` seconds."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(limit)
    assert out, f"still running after {limit} s"
    return out[0]


# --- 2: a rowid near 2**62 is one step, not 2**54 of them ---------------------------------------

def test_a_rowid_near_2_62_is_one_step_and_every_readable_row_is_salvaged(tmp_path):
    from agent.outbox.salvage import salvage

    path = tmp_path / "outbox.db.corrupt-20261124T080000"
    rows, on_page = _damaged_with_huge_rowids(path)
    found = _in_thread(lambda: salvage(path))
    read = {r.id for r in found.rows}
    assert read == {r.id for r in rows} - on_page           # every row off the garbage page, in seq order
    assert {rows[-2].id, rows[-1].id} <= read                 # the ones at 2**40 and near 2**62 too
    assert [r.seq for r in found.rows] == sorted(r.seq for r in found.rows)
    assert found.lost == len(on_page) and not found.complete and found.error is None


def test_queue_import_of_a_file_with_a_huge_rowid_ends_and_counts_what_is_lost(tmp_path):
    state = tmp_path / "state"
    kept = state / "outbox.db.corrupt-20261124T080000"
    rows, on_page = _damaged_with_huge_rowids(kept)
    conf = config(tmp_path, state)
    Outbox(state / "outbox.db", station="counter-new").close()
    try:
        done = cli("queue", "-c", str(conf), "import", str(kept), timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"queue import still running after {LIMIT_S} s")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"{len(rows) - len(on_page)} check-in(s) queued" in done.stdout, done.stdout
    assert f"{len(on_page)} undelivered check-in(s) in it could not be read" in done.stdout, done.stdout


def _nested_text(path: Path, mb: int) -> Path:
    """`mb` MB of `{"schema":` nested in itself after a few NUL bytes: slow to scan (seconds here;
    the old scan took about 19 s a megabyte), with no check-in in it."""
    unit = b'{"schema":'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 100 + unit * (mb * 1024 * 1024 // len(unit)))
    return path


# --- 6: nesting, size and time on the page scan and the read ------------------------------------

def _deep_checkin(depth: int) -> tuple[str, str]:
    """(id, JSON text) of a check-in as a station stores it, with a field nested `depth` deep."""
    from agent.cards import read_card
    from agent.checkin import checkin_body
    from agent.event import envelope
    from agent.outbox import uuid7
    from agent.sim.demo import CCCD

    event_id = uuid7()
    payload = envelope(checkin_body(read_card(CCCD)), event_id=event_id, seq=7, station="counter-old")
    text = json.dumps(payload, ensure_ascii=False)
    return event_id, text[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("how", ["page scan", "read"])
def test_a_record_nested_950_deep_is_refused_clearly_and_the_rest_imported(tmp_path, how):
    state = tmp_path / "state"
    conf = config(tmp_path, state)
    Outbox(state / "outbox.db", station="counter-new").close()
    deep_id, deep = _deep_checkin(950)
    if how == "page scan":     # bytes around the records, as on a page whose schema is gone
        good = _outbox(tmp_path / "src" / "outbox.db", 1)[0]
        damaged = tmp_path / "damaged.bin"
        damaged.write_bytes(b"\0" * 100 + deep.encode() + b"\0" * 50
                            + json.dumps(good.payload, ensure_ascii=False).encode() + b"\0" * 50)
        where = "record at byte 100:"
    else:                      # a sound outbox file with one such row in it
        damaged = tmp_path / "src" / "outbox.db"
        good = _outbox(damaged, 1)[0]
        conn = sqlite3.connect(damaged)
        conn.execute("INSERT INTO events (id, seq, created_at, payload, delivered_at, attempts) "
                     "VALUES (?, 7, 0, ?, NULL, 0)", (deep_id, deep))
        conn.commit()
        conn.close()
        where = "row 2: payload"
    done = cli("queue", "-c", str(conf), "import", str(damaged), timeout=LIMIT_S)
    assert "Traceback" not in done.stderr and "RecursionError" not in done.stderr, done.stderr[-2000:]
    assert f"{where} nested deeper than 16 levels, not a check-in" in done.stderr, done.stderr
    assert done.returncode == 1 and "1 check-in(s) queued" in done.stdout, done.stdout
    box = Outbox(state / "outbox.db", station="x", admin=True, readonly=True)
    try:
        assert [r.id for r in box.pending(10)] == [good.id]
    finally:
        box.close()


def test_megabytes_of_nested_text_are_scanned_in_bounded_time_with_one_line_of_refusals(tmp_path):
    """2 MB of `{"schema":` nested in itself took 43 s (every marker parsed again up to Python's
    recursion limit); now one pass."""
    state = tmp_path / "state"
    conf = config(tmp_path, state)
    Outbox(state / "outbox.db", station="counter-new").close()
    nested = tmp_path / "nested.bin"
    unit = b'{"schema":'
    nested.write_bytes(b"\0" * 100 + unit * (2 * 1024 * 1024 // len(unit)))
    try:
        done = cli("queue", "-c", str(conf), "import", str(nested), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("queue import of 2 MB of nested text still running after 30 s")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "record at byte 100: nested deeper than 16 levels, not a check-in" in done.stderr
    assert "more not imported" in done.stderr, done.stderr
    assert done.returncode == 1 and "0 check-in(s) queued" in done.stdout, done.stdout


def test_a_large_file_is_scanned_in_bounded_memory(tmp_path):
    """The page scan reads the file through a memory map it gives back as it goes: 64 MB of garbage
    (the schema page gone, no check-in in it) took four copies of the file in memory before (the
    bytes, a copy, the text decoded with U+FFFD)."""
    big = tmp_path / "garbage.bin"
    data = bytearray(os.urandom(64 << 20))
    data[0:16] = bytes(16)
    data[100] = 0        # page 1 no b-tree page: nothing for a header repair to read
    big.write_bytes(data)
    del data
    probe = ("import resource, sys\n"
             "from agent.outbox.salvage import salvage\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "found = salvage(sys.argv[1])\n"
             "print(len(found.rows), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(big)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    rows, grew_mb = map(int, done.stdout.split())
    assert rows == 0
    assert grew_mb < 40, f"peak resident memory grew {grew_mb} MB scanning a 64 MB file"


def test_the_page_scan_finds_records_around_damage_and_refuses_only_what_is_beyond_the_bounds():
    from agent.outbox.salvage import scan_pages

    ids = [f"0193a0c0-0000-7000-8000-00000000000{i}" for i in range(5)]

    def record(i: int, extra: str = "") -> bytes:
        return (f'{{"schema": "1.1", "id": "{ids[i]}", "seq": {i}, "station": "s", '
                f'"card": {{"name": "An {{\\"schema\\": [}}"}}{extra}}}').encode()
    data = (b"\0\x01" + record(0)[:40] + b"\0"              # cut by the damage: not JSON
            + b'{"schema": "1.1", "x'                        # cut too, its string taking in the next `{`
            + record(1)                                      # found after both
            + record(2, ', "extra": ' + record(3).decode())  # one holding another: the outer one only
            + b"\xff" + record(4, ', "x": ' + "[" * 20 + "]" * 20))   # too deep: refused
    found = scan_pages(data)
    assert [r.id for r in found] == [ids[1], ids[2]]
    assert found[1].payload["extra"]["id"] == ids[3]


def test_the_daemons_bounds_stop_a_salvage_and_say_so(tmp_path):
    """The daemon salvages with a deadline and at most max_events rows (agent.outbox.store
    RECOVER_S, agent.outbox.kept SETTLE_S): what is not read stays in the kept file, never counted
    as lost, and the file is never complete (so never deleted)."""
    from agent.outbox.salvage import salvage

    slow = _nested_text(tmp_path / "nested.bin", 16)
    t0 = time.monotonic()
    found = _in_thread(lambda: salvage(slow, deadline_s=0.3))
    assert time.monotonic() - t0 < 5
    assert found.stopped == "stopped after 0.3 s" and found.lost is None and not found.complete
    _damaged_with_huge_rowids(tmp_path / "outbox.db")
    found = _in_thread(lambda: salvage(tmp_path / "outbox.db", max_rows=10))
    assert len(found.rows) == 10 and found.stopped == "stopped at 10 check-ins"
    assert found.lost is None and not found.complete


# --- 2: a station with such files beside its outbox -----------------------------------------------

def test_the_station_never_waits_for_a_kept_file_that_is_slow_to_read(tmp_path):
    """The camera loop (status every 2 s, faults every 10 s) asks whether a kept damaged file is
    settled; reading one may take long, so it is read off that thread: the loop waits a second at
    most, once, and the file is a fault until it has been read."""
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station

    state = tmp_path / "state"
    Outbox(state / "outbox.db", station="s").close()
    slow = _nested_text(state / "outbox.db.corrupt-20261124T080000", 16)
    cfg = Config()
    cfg.station.state_dir = str(state)
    cfg.feedback.backend = "none"
    station = Station(cfg, feedback=Feedback(NoOutput()))
    try:
        took = []
        for _ in range(2):
            t0 = time.monotonic()
            faults = _in_thread(lambda: station.faults(leds=True), 10)
            took.append(time.monotonic() - t0)
            assert any(str(slow) in f for f in faults), faults
        assert took[0] < 5 and took[1] < 1, took
    finally:
        station.outbox.close()


@pytest.mark.slow   # the real daemon, a few seconds of scanning
def test_a_station_with_such_files_beside_its_outbox_scans_and_stops_on_sigterm(tmp_path):
    """A kept file with a rowid near 2**62 made the daemon's first status write walk for ever: no
    check-in in 36 minutes, SIGTERM ignored, the watchdog's restart the same. With it, and a file
    that takes seconds to scan, the station records check-ins at once and stops on SIGTERM."""
    state = tmp_path / "state"
    huge = state / "outbox.db.corrupt-20261124T080000"
    _damaged_with_huge_rowids(huge)
    slow = _nested_text(state / "outbox.db.corrupt-20261124T090000", 16)
    conf = config(tmp_path, state)
    d = Daemon(conf)
    try:
        assert d.wait_for(lambda: len(d.recorded()) >= 3, 60), d.log[-3000:]
        faults = d.status()["faults"]
        for kept in (huge, slow):
            assert any(f"damaged file {kept}" in f for f in faults), faults
    finally:
        t0 = time.monotonic()
        code = d.stop()
        stopped_in = time.monotonic() - t0
    assert code == 0 and stopped_in < 10, (code, stopped_in, d.log[-3000:])
    assert "Traceback" not in d.log
