"""Nothing lost, for real: the daemon against a real Mosquitto while the outbox is damaged, the disk
fills, another process holds the lock, and the sender thread crashes; every check-in the station
recorded is delivered without a restart, or reported lost by number; nothing healthy moved aside.

The scenarios and their figures are in docs/reliability.md.

Also: `run` on a disk too full to open the outbox exits 1, so systemd tries again."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.broker import Broker, Subscriber
from support.daemon import ROOT, Daemon, cli, config
from support.tmpfs import tmpfs

TOPICS = "hospital/checkin/#"
pytestmark = pytest.mark.slow   # real-time fault scenarios against the real daemon


def report(scenario: str, recorded: set[int], delivered: set[int], salvaged: int = 0, lost: int = 0) -> None:
    """One row of docs/reliability.md's fault table (shown with pytest -s)."""
    print(f"\nFAULT-TABLE | {scenario} | {len(recorded)} | {len(recorded & delivered)} | {salvaged} | {lost} |")


def delivered_seqs(sub: Subscriber) -> set[int]:
    return {e["seq"] for e in sub.json_on("/checkin")}


def aside_files(state: Path) -> list[Path]:
    return sorted(p for p in state.glob("outbox.db.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def checkpoint(db: Path) -> None:
    """Move everything from the WAL into the main file, from another connection (as SQLite does)."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        for _ in range(50):
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.1)
        raise AssertionError("could not checkpoint the outbox")
    finally:
        conn.close()


def event_leaf_pages(db: Path) -> list[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'events' AND pagetype = 'leaf' "
                                           "ORDER BY pageno")]
    finally:
        conn.close()


def damage(db: Path, pages: list[int], size: int = 4096) -> list[bytes]:
    """A failing SD card: whole pages of the live file turn to garbage (returned, page by page)."""
    written = []
    with open(db, "r+b") as f:
        for page in pages:
            written.append(os.urandom(size))
            f.seek((page - 1) * size)
            f.write(written[-1])
            f.flush()
            os.fsync(f.fileno())
    return written


def damage_live(db: Path, page: int, size: int = 4096) -> None:
    """Damage one page of a file the daemon has open, so that the daemon sees it. Its connection
    may hold the page's good copy in its cache, read just before (a check-in's repeat_today scan
    reads the oldest rows), and SQLite keeps that cache until the WAL changes under it: the
    damage would go unseen, and the good page would be written back when the rows are delivered.
    A checkpoint from another connection after the damage restarts the WAL, so every connection
    reads the page from the file again; the page on the file must then still be the garbage."""
    for _ in range(5):
        garbage = damage(db, [page], size)[0]
        checkpoint(db)
        with open(db, "rb") as f:
            f.seek((page - 1) * size)
            if f.read(size) == garbage:
                return
    raise AssertionError(f"page {page} of {db} was written over after each of 5 damages")


# --- 1 and 3: damaged live pages, salvage, rows moved aside are never stranded --------------------

def test_live_pages_damaged_mid_run_every_checkin_delivered_or_counted_lost(tmp_path):
    state = tmp_path / "state"
    broker = Broker(tmp_path / "broker")          # not started yet: check-ins queue up
    conf = config(tmp_path, state, port=broker.port)
    d = Daemon(conf)
    sub = None
    try:
        assert d.wait_for(lambda: len(d.recorded()) >= 16, 60), d.log[-2000:]
        db = state / "outbox.db"

        def enough_leaves() -> bool:
            checkpoint(db)
            return len(event_leaf_pages(db)) >= 4
        assert d.wait_for(enough_leaves, 60), event_leaf_pages(db)
        leaves = event_leaf_pages(db)
        # one table page of the oldest rows: a few rows. Not one near the end, where the daemon
        # still inserts: rebalancing rewrites the last leaves and their siblings into the WAL,
        # whose good copy SQLite then reads instead of the damaged page (seen on a loaded machine)
        damage_live(db, leaves[0])
        broker.start()
        sub = Subscriber(broker.port, TOPICS)
        # the link reads the damaged page, SQLite proves it damaged, the rows are salvaged, the
        # sender goes on; scanning never stopped
        assert d.wait_for(lambda: "salvaged into a new outbox" in d.log, 30), d.log[-3000:]
        before = len(d.recorded())
        assert d.wait_for(lambda: len(d.recorded()) >= before + 3, 30)
        assert d.wait_for(lambda: any("damaged file" in f for f in d.status()["faults"]), 10)
        status = d.status()
        rec = status["outbox"]["recovery"]
        assert rec["saved"] > 0 and rec["lost"] is not None and rec["lost"] >= 1
        recorded = d.recorded()
        assert sub.wait_for(lambda: len(recorded - delivered_seqs(sub)) <= rec["lost"], 30)
    finally:
        rc = d.stop()
        if sub:
            sub.close()
        broker.stop()
    recorded, delivered = d.recorded(), delivered_seqs(sub)
    missing = recorded - delivered
    # every recorded check-in was delivered, or is one of those reported lost, by number
    assert len(missing) == rec["lost"], (sorted(missing), rec)
    report("live pages damaged mid-run", recorded, delivered, rec["saved"], rec["lost"])
    assert rc == 0 and d.log.count("worker crashed") == 0 and "Traceback" not in d.log
    # the damaged file is kept (not every row was readable), reported, and importable idempotently
    kept = aside_files(state)
    assert [str(p) for p in kept] == [rec["file"]]
    assert any("damaged file" in f for f in status["faults"])
    doctor = cli("doctor", "-c", str(conf))
    assert "damaged outbox kept aside" in doctor.stdout
    again = cli("queue", "-c", str(conf), "import", str(kept[0]))
    assert again.returncode == 0 and "0 check-in(s) queued" in again.stdout, again.stdout + again.stderr
    assert f"{rec['lost']} undelivered check-in(s) in it could not be read" in again.stdout
    gone = cli("queue", "-c", str(conf), "import", "--delete-after", str(kept[0]))
    assert gone.returncode == 0 and not aside_files(state)


def test_damaged_file_fully_salvaged_is_deleted_and_counted(tmp_path):
    from agent.outbox import Outbox

    path = tmp_path / "outbox.db"
    box = Outbox(path, station="s")
    rows = [box.put({"card": {"name": f"Nguyễn Văn {i}" * 8}}) for i in range(60)]
    box.mark_delivered([r.id for r in rows[:10]])
    box.close()
    # damage the index only (table pages intact): SQLite reports damage, every row is still readable
    conn = sqlite3.connect(path)
    pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = 'sqlite_autoindex_events_1'")]
    conn.close()
    damage(path, pages[-1:])
    box = Outbox(path, station="s")
    rec = box.stats().recovery
    assert rec["saved"] == 50 and rec["lost"] == 0 and rec["kept"] is False
    assert not aside_files(tmp_path)                      # nothing of it left on the card
    assert [r.id for r in box.pending(100)] == [r.id for r in rows[10:]]
    assert [r.payload for r in box.pending(100)] == [r.payload for r in rows[10:]]
    box.close()


# --- 1: the sender thread raises: supervised, visible, restarted, nothing lost --------------------

def test_sender_thread_crash_is_a_fault_then_a_restart_and_nothing_is_lost(tmp_path):
    state = tmp_path / "state"
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, TOPICS)
    conf = config(tmp_path, state, port=broker.port)
    d = Daemon(conf, env={"SCANNER_AGENT_FAILPOINTS": "mqtt.pump=3"})
    try:
        assert d.wait_for(lambda: d.log.count("mqtt-link worker crash") >= 3, 60), d.log[-2000:]
        status = d.status()
        assert any("mqtt-link worker crashed" in f for f in status["faults"]), status["faults"]
        assert d.wait_for(lambda: d.status()["workers"]["mqtt-link"]["crashes"] == 3, 10)
        assert d.status()["workers"]["mqtt-link"]["alive"]
        assert sub.wait_for(lambda: any("mqtt-link worker crashed" in f for h in sub.json_on("/health")
                                        for f in h["faults"]), 20)
        assert d.wait_for(lambda: len(d.recorded()) >= 6, 30)
        assert sub.wait_for(lambda: d.recorded() <= delivered_seqs(sub), 30)
    finally:
        d.stop()
        sub.close()
        broker.stop()
    assert d.recorded() <= delivered_seqs(sub)
    report("sender thread raises 3 times", d.recorded(), delivered_seqs(sub))
    assert d.log.count("Traceback") == 1             # logged once with its traceback, then one line each


# --- 8: the disk fills and is freed -------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "state", "size=3m,mode=0700", "a 3 MB tmpfs to fill the disk") as mount:
        yield mount


def test_disk_full_refuses_clearly_and_everything_recorded_is_delivered_once_freed(tmp_path, small_disk):
    state = small_disk
    broker = Broker(tmp_path / "broker")
    conf = config(tmp_path, state, port=broker.port)
    d = Daemon(conf)
    sub = None
    filler = state / "filler"
    try:
        assert d.wait_for(lambda: len(d.recorded()) >= 3, 60)
        with open(filler, "wb", buffering=0) as f:   # fill the card to the last byte
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
            try:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
            except OSError:
                pass
        assert d.wait_for(lambda: "NOT recorded (disk full" in d.log, 60), d.log[-2000:]
        assert "cannot rollback" not in d.log
        time.sleep(3)
        status = d.status()                         # the status file cannot be refreshed: still running
        assert status["daemon"] == "running"
        # ... and its FAULT line stays, from the daemon's memory through the control socket (exit 2)
        assert any("disk full" in f for f in status["faults"]), status
        text = cli("status", "-c", str(conf))
        assert text.returncode == 2 and "FAULT        outbox:" in text.stdout and "disk full" in text.stdout, text.stdout
        assert not list((state / "run").glob(".status-*"))
        filler.unlink()
        before = len(d.recorded())
        assert d.wait_for(lambda: len(d.recorded()) >= before + 3, 60), d.log[-2000:]
        broker.start()
        sub = Subscriber(broker.port, TOPICS)
        assert sub.wait_for(lambda: d.recorded() <= delivered_seqs(sub), 30)
    finally:
        d.stop()
        if sub:
            sub.close()
        broker.stop()
    assert d.recorded() <= delivered_seqs(sub)
    assert not aside_files(state) and "Traceback" not in d.log
    refused = d.log.count("NOT recorded (disk full")
    report(f"disk filled, then freed ({refused} presentations refused, red)", d.recorded(), delivered_seqs(sub))


# --- 2: another process holds the outbox lock ----------------------------------------------------

HOLD = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA locking_mode=EXCLUSIVE")
c.execute("BEGIN EXCLUSIVE")
c.execute("UPDATE meta SET value = value")
print("held", flush=True)
sys.stdin.readline()                     # held until the test says (or closes stdin)
c.execute("COMMIT")
"""


def test_lock_held_while_run_starts_and_while_it_lists_nothing_is_moved(tmp_path):
    from agent.outbox import Outbox

    state = tmp_path / "state"
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, TOPICS)
    conf = config(tmp_path, state, port=broker.port)
    box = Outbox(state / "outbox.db", station="counter-rel")
    early = box.put({"kind": "bhyt", "verdict": "ok", "problems": [], "card": {}, "read_at": "x",
                     "clock_synced": False})
    box.close()
    # The lock is held until the station has met it: a fixed hold raced the daemon's start (SQLite's
    # own busy wait is 10 s, so a daemon slower than 3 s to start under load never saw a 13 s hold).
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(state / "outbox.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    d = Daemon(conf)                                   # starts while the lock is held
    try:
        listed = cli("queue", "-c", str(conf), "list")     # IT looks meanwhile: waits 10 s, then says why
        assert listed.returncode == 1 and "locked by another process" in listed.stderr, listed.stderr
        assert "Traceback" not in listed.stderr
        assert d.wait_for(lambda: "is locked by another process; waiting" in d.log, 45), d.log[-2000:]
        assert not d.recorded() and not aside_files(state)   # it waits for the lock, moves nothing
        holder.stdin.close()                               # the other process lets go
        holder.wait(30)
        assert d.wait_for(lambda: len(d.recorded()) >= 3, 60), d.log[-2000:]
        assert sub.wait_for(lambda: early.seq in delivered_seqs(sub) and d.recorded() <= delivered_seqs(sub), 30)
    finally:
        holder.kill()
        d.stop()
        sub.close()
        broker.stop()
    assert not aside_files(state) and "Traceback" not in d.log
    report("lock held while run starts and IT lists, until the station waits", d.recorded() | {early.seq}, delivered_seqs(sub))
    ok = cli("queue", "-c", str(conf), "list", "--all")
    assert ok.returncode == 0 and early.id in ok.stdout


def _as_nobody(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python as the unprivileged user 'nobody' (the service user's position), with this
    project's packages (Debian's python3.11: the venv's own interpreter may be under /root)."""
    site = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"), None)
    path = f"{ROOT}:{site}" if site else str(ROOT)
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                           "/usr/bin/python3", "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": path, "USER": "nobody", "PATH": "/usr/bin:/bin"}, timeout=60)


def test_root_owned_wal_and_shm_left_by_sudo_are_named_never_moved(tmp_path):
    from agent.outbox import Outbox

    folder = tmp_path / "svc"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    db = folder / "outbox.db"
    box = Outbox(db, station="s")
    box.put({"card": {}})
    box.close()
    os.system(f"chown -R nobody {folder}")
    # an admin command run with sudo while the daemon is stopped: it must leave nothing root-owned
    assert cli("queue", "-c", str(config(tmp_path, folder)), "list").returncode == 0
    for side in folder.glob("outbox.db-*"):
        assert side.stat().st_uid == db.stat().st_uid, side
    # root-owned leftovers of an older version: the service user gets the path and the fix
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").write_bytes(b"")
        os.chown(f"{db}{suffix}", 0, 0)
        os.chmod(f"{db}{suffix}", 0o600)
    out = _as_nobody("from agent.outbox import Outbox, OutboxError\n"
                     "try:\n    Outbox('outbox.db', station='s')\nexcept OutboxError as e:\n    print(e)\n", folder)
    assert "not writable by this user (nobody)" in out.stdout and "chown nobody:" in out.stdout, out
    assert not aside_files(folder) and db.exists()


# --- 4 and 12: startup errors are one line and exit 2 --------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    ('[mqtt]\nhost = "127.0.0.1"\nca_file = "/nonexistent/ca.crt"\n', "mqtt.ca_file '/nonexistent/ca.crt' does not exist"),
    ('[mqtt]\nhost = "127.0.0.1"\ncert_file = "/nonexistent/c.pem"\nkey_file = "/nonexistent/k.pem"\n',
     "mqtt.cert_file '/nonexistent/c.pem' does not exist"),
    ('[mqtt]\nhost = "127.0.0.1"\ntls = false\n', "allow_insecure"),
])
def test_startup_errors_exit_2_with_one_line_and_config_check_agrees(tmp_path, extra, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[feedback]\nbackend = "none"\n{extra}')
    check = cli("config", "check", str(conf))
    assert check.returncode == 2 and needle in check.stderr, check.stderr
    run = cli("run", "-c", str(conf), timeout=30)
    assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr
    assert all(line.startswith(f"{conf}:") for line in run.stderr.strip().splitlines())  # one line a problem


def test_state_dir_that_cannot_be_created_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{blocker / "state"}"\n[feedback]\nbackend = "none"\n')
    check = cli("config", "check", str(conf))
    assert check.returncode == 2 and "station.state_dir" in check.stderr and "cannot be created" in check.stderr
    run = cli("run", "-c", str(conf), timeout=30)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "state_dir" in run.stderr


def test_a_ca_file_that_is_not_a_certificate_exits_2(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[feedback]\nbackend = "none"\n'
                    f'[mqtt]\nhost = "127.0.0.1"\nca_file = "{ca}"\n')
    run = cli("run", "-c", str(conf), timeout=30)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "cannot start" in run.stderr, run.stderr


def test_run_on_a_full_disk_exits_1_so_systemd_tries_again(tmp_path, full_state_dir):
    """`run` whose outbox cannot be opened because the disk is full (no inode left for it) exits 1,
    a runtime failure systemd restarts (Restart=always), not 2 (RestartPreventExitStatus=2): the
    station comes back by itself once space is freed, instead of staying down."""
    from support.daemon import cli

    conf = tmp_path / "config.toml"
    conf.write_text(f'[station]\nstate_dir = "{full_state_dir}"\n[camera]\nsource = "replay"\n'
                    '[feedback]\nbackend = "none"\n')
    run = cli("run", "-c", str(conf), timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "full" in run.stderr and "Traceback" not in run.stderr, run.stderr
