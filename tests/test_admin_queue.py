"""`scanner-agent queue` (agent/admin/queue.py) run as IT runs it, on a stopped station:
list, show, export, import, retry and remove; files written for IT, hostile imports, links
planted in the state directory, refusals in one line, an import bounded in size and memory."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cards import read_card
from agent.outbox import Outbox
from support.daemon import cli, config


def test_export_refuses_an_existing_file_and_replaces_it_with_force(stopped_station, tmp_path):
    """'a new FILE', as its help says: an existing file is kept unless --force, which replaces it
    with a fresh 0600 one."""
    conf, _, row = stopped_station
    out = tmp_path / "export.jsonl"
    out.write_text("old")
    os.chmod(out, 0o666)
    refused = cli("queue", "-c", str(conf), "export", str(out))
    assert refused.returncode == 2 and "--force" in refused.stderr and out.read_text() == "old", refused.stderr
    done = cli("queue", "export", str(out), "--force", "-c", str(conf))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and row.id in out.read_text()


def test_export_and_snapshot_never_follow_links_or_write_into_the_state_dir(stopped_station, tmp_path):
    conf, state, _ = stopped_station
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.jsonl"
    link.symlink_to(victim)
    refused = cli("queue", "-c", str(conf), "export", str(link), "--force")
    assert refused.returncode == 2 and "not a regular file" in refused.stderr
    assert victim.read_text() == "keep me" and link.is_symlink()
    before = (state / "outbox.db").read_bytes()
    snap = cli("snapshot", "-c", str(conf), str(state / "outbox.db"))
    assert snap.returncode == 2 and "state directory" in snap.stderr and "Traceback" not in snap.stderr
    assert (state / "outbox.db").read_bytes() == before
    good = tmp_path / "view.jpg"
    taken = cli("snapshot", "-c", str(conf), str(good))
    assert taken.returncode == 0, taken.stderr
    assert stat.S_IMODE(good.stat().st_mode) == 0o600 and good.read_bytes()[:2] == b"\xff\xd8"


# --- 13: admin commands answer in one line ---------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (("export", "/nonexistent/dir/x"), "does not exist"),
    (("export", "/tmp"), "is a folder"),
    (("list", "--limit", "100000000000000000000"), "must be between 1 and"),
])
def test_queue_commands_refuse_in_one_line(stopped_station, args, needle):
    conf, _, _ = stopped_station
    out = cli("queue", "-c", str(conf), *args)
    assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_queue_list_shows_sent_awaiting_receipt(tmp_path):
    """Receipt mode: a check-in the broker took but the hospital has not confirmed is not QUEUED."""
    from agent.checkin import checkin_body
    from agent.sim.demo import BHYT15, CCCD

    state = tmp_path / "state"
    box = Outbox(state / "outbox.db", station="counter-rc")
    sent, waiting = (box.put(checkin_body(read_card(p))) for p in (BHYT15, CCCD))
    box.count_attempt([sent.id])
    box.close()
    conf = config(tmp_path, state, station="counter-rc", port=9)
    conf.write_text(conf.read_text() + 'delivered_on = "receipt"\n')
    out = cli("queue", "list", "-c", str(conf))
    assert out.returncode == 0, out.stderr
    rows = {line.split()[-1]: line for line in out.stdout.splitlines()[1:]}
    assert "SENT, AWAITING RECEIPT" in rows[sent.id] and "QUEUED" in rows[waiting.id], out.stdout


def test_queue_import_is_idempotent_and_refuses_what_is_not_a_checkin(stopped_station, tmp_path):
    conf, state, row = stopped_station
    export = tmp_path / "old-station.jsonl"
    from agent.checkin import checkin_body
    from agent.sim.demo import BHYT10, BHYT15, CCCD

    other = Outbox(tmp_path / "other" / "outbox.db", station="counter-old")
    moved = [other.put(checkin_body(read_card(p))) for p in (BHYT15, CCCD, BHYT10)]
    with open(export, "w") as f:
        for r in moved:
            f.write(json.dumps(r.payload, ensure_ascii=False) + "\n")
        f.write('{"id": "not a check-in"}\n')
    other.close()
    first = cli("queue", "-c", str(conf), "import", str(export))
    assert first.returncode == 1 and "3 check-in(s) queued" in first.stdout and "line 4" in first.stderr
    again = cli("queue", "-c", str(conf), "import", str(export))
    assert "0 check-in(s) queued" in again.stdout and "3 already queued" in again.stdout
    box = Outbox(state / "outbox.db", station="counter-it", admin=True, readonly=True)
    pending = box.pending(10)
    box.close()
    assert [r.id for r in pending] == [row.id] + [r.id for r in moved]
    assert [r.payload for r in pending[1:]] == [r.payload for r in moved]  # exactly as exported


def test_queue_import_on_a_station_that_has_never_run_creates_the_outbox(tmp_path):
    """The README's replacement station: `queue import` there, before its first start; `-c` after
    the action, like every other command. As root, the new outbox belongs to the state directory's
    owner (the service user), so the station can open it."""
    import pwd

    from agent.checkin import checkin_body
    from agent.sim.demo import BHYT15, CCCD

    old = Outbox(tmp_path / "old" / "outbox.db", station="counter-old")
    moved = [old.put(checkin_body(read_card(p))) for p in (BHYT15, CCCD)]
    old.close()
    export = tmp_path / "undelivered.jsonl"
    export.write_text("".join(json.dumps(r.payload, ensure_ascii=False) + "\n" for r in moved))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() == 0:
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
    conf = config(tmp_path, state, station="counter-new")
    listed = cli("queue", "list", "-c", str(conf))
    assert listed.returncode == 2 and "no outbox here" in listed.stderr      # list never creates one
    victim = tmp_path / "victim"
    (state / "outbox.db-wal").symlink_to(victim)          # planted by the service account: never followed
    planted = cli("queue", "import", str(export), "-c", str(conf))
    assert planted.returncode == 1 and "move it away" in planted.stderr and not victim.exists(), planted.stderr
    (state / "outbox.db-wal").unlink()
    done = cli("queue", "import", str(export), "-c", str(conf))
    assert done.returncode == 0 and "2 check-in(s) queued" in done.stdout, done.stdout + done.stderr
    db = state / "outbox.db"
    if os.geteuid() == 0:
        assert db.stat().st_uid == nobody.pw_uid
    box = Outbox(db, station="counter-new", admin=True, readonly=True)
    assert [r.id for r in box.pending(10)] == [r.id for r in moved]
    box.close()


def _station_of_nobody(tmp_path: Path) -> tuple[Path, Path, str]:
    """A stopped station whose state dir belongs to the service user ('nobody')."""
    os.chmod(tmp_path, 0o755)
    state = tmp_path / "state"
    box = Outbox(state / "outbox.db", station="counter-it")
    row = box.put({"read_at": "2026-11-24T08:00:00+07:00", "clock_synced": True, "kind": "cccd",
                   "verdict": "ok", "problems": [], "card": {"name": "An", "id_number": "079090001234"}})
    box.close()
    os.system(f"chown -R nobody:nogroup {state}")
    return config(tmp_path, state), state, row.id


# --- 1: root commands never follow links in the state dir --------------------------------------

@pytest.mark.parametrize("args", [("status",), ("status", "--json"), ("queue", "list"),
                                  ("queue", "show", "ID"), ("queue", "export", "OUT")])
@pytest.mark.parametrize("suffix", ["-shm", "-wal"])
def test_root_read_only_commands_never_chown_through_a_link(tmp_path, args, suffix):
    conf, state, event_id = _station_of_nobody(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    os.chmod(victim, 0o640)
    # the service user (the attacker) plants a link where SQLite keeps its side file
    link = Path(f"{state / 'outbox.db'}{suffix}")
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    os.lchown(link, 65534, 65534)
    args = [a.replace("ID", event_id).replace("OUT", str(tmp_path / "out.jsonl")) for a in args]
    done = cli(args[0], "-c", str(conf), *args[1:])
    st = victim.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640), done.stderr
    assert victim.read_text() == "root:secret\n" and link.is_symlink()
    assert "Traceback" not in done.stderr, done.stderr


def test_root_write_commands_refuse_a_link_in_the_state_dir(tmp_path):
    conf, state, event_id = _station_of_nobody(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    link = Path(f"{state / 'outbox.db'}-wal")
    link.symlink_to(victim)
    done = cli("queue", "-c", str(conf), "retry", event_id)
    assert done.returncode != 0 and "symbolic link" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert victim.stat().st_uid == 0 and victim.read_text() == "root:secret\n"


@pytest.mark.parametrize("name", ["outbox.db-wal", "outbox.db-shm", "outbox.db"])
def test_a_hard_link_in_the_state_dir_is_refused_like_a_symbolic_link(tmp_path, name):
    """Issue 32 item 10: the link check refused a symlinked -wal/-shm but not a hard link, which is
    another name for any file of the filesystem (only fs.protected_hardlinks=1 keeps the service
    account from making one to a file it does not own; root, or a system without it, can). SQLite
    then wrote its WAL into the other file. Refused, naming the file and the fix, nothing changed."""
    conf, state, event_id = _station_of_nobody(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:secret\n")
    os.chmod(victim, 0o640)
    where = state / name
    if name == "outbox.db":                  # the outbox itself with a second name elsewhere
        os.link(where, victim.with_name("copy.db"))
        victim = victim.with_name("copy.db")
    else:
        os.link(victim, where)
    before = victim.read_bytes(), victim.stat().st_uid
    done = cli("queue", "-c", str(conf), "retry", event_id)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"{where} is a hard link (2 names for one file)" in done.stderr, done.stderr
    assert f"sudo find / -xdev -samefile {where}" in done.stderr, done.stderr
    assert (victim.read_bytes(), victim.stat().st_uid) == before and where.stat().st_nlink == 2
    from agent.outbox import OutboxError
    with pytest.raises(OutboxError, match="is a hard link"):         # the daemon's own open, too
        Outbox(state / "outbox.db", station="counter-rc")
    doctor = cli("doctor", "-c", str(conf))                          # and doctor, which reads it as root too
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("FIX  outbox"))
    assert f"{where} is a hard link" in line and (victim.read_bytes(), victim.stat().st_uid) == before


# --- 9: queue import of hostile files -----------------------------------------------------------

def test_queue_import_bounds_nesting_and_cleans_names_as_the_card_reader_does(tmp_path):
    import json
    from agent.cards import read_card
    from agent.cards.sanitize import clean_text
    from agent.checkin import checkin_body
    from agent.sim.demo import CCCD

    conf, state, _ = _station_of_nobody(tmp_path)
    other = Outbox(tmp_path / "other" / "outbox.db", station="counter-old")
    row = other.put(checkin_body(read_card(CCCD)))
    other.close()
    hostile = "Nguyễn\x1b[2J\x1b]0;pwned\x07 Văn\x07 \u202eAn\x00\x9b31m"
    payload = {**row.payload, "card": {**row.payload["card"], "name": hostile, "address": "1\x1b[31m Lê Lợi"}}
    export = tmp_path / "hostile.jsonl"
    export.write_text("[" * 5000 + "\n" + '{"a": ' * 5000 + "\n" + '"' + "[" * 200000 + '"\n'
                      + json.dumps(payload) + "\n")
    done = cli("queue", "-c", str(conf), "import", str(export))
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
    assert "line 1: nested deeper than" in done.stderr and "line 2: nested deeper than" in done.stderr
    assert "line 3: longer than" in done.stderr
    assert "1 check-in(s) queued" in done.stdout, done.stdout
    listed = cli("queue", "-c", str(conf), "list", "--reveal")
    shown = cli("queue", "-c", str(conf), "show", "--reveal", row.id)
    for out in (listed.stdout, shown.stdout):
        assert not any(c in out for c in "\x1b\x07\u202e\x00\x9b"), repr(out)
    box = Outbox(state / "outbox.db", station="x", admin=True, readonly=True)
    forwarded = box.get(row.id).payload
    box.close()
    assert forwarded["card"]["name"] == clean_text(hostile) == "Nguyễn Văn An"
    assert forwarded["card"]["address"] == "1 Lê Lợi"
    assert {k: v for k, v in forwarded.items() if k != "card"} == {k: v for k, v in payload.items() if k != "card"}


def test_a_binary_file_with_check_in_lookalikes_queues_only_real_check_ins(tmp_path):
    import json
    conf, state, _ = _station_of_nobody(tmp_path)
    fake = {"schema": "1.0", "id": "0193a0c0-0000-7000-8000-0000000000aa", "seq": 1, "station": "x",
            "kind": "cccd", "verdict": "ok", "card": {"name": "no read_at, no problems"}}
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\0" * 100 + json.dumps(fake).encode() + b"\0" * 3000 + b'{"schema":' + b"[" * 5000)
    done = cli("queue", "-c", str(conf), "import", str(junk))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "0 check-in(s) queued" in done.stdout and "not a check-in" in done.stderr, done.stdout + done.stderr


# --- issue 32, item 1: nothing that cannot be sent is queued; an undeliverable one leaves by IT's hand

def test_queue_import_refuses_a_check_in_the_station_could_never_send(stopped_station, tmp_path):
    """The audit's line: 64 990 bytes, under the 64 KiB line limit, but 74 875 once stored (stored
    JSON has spaces after ',' and ':'); on main it was queued first and stopped all delivery."""
    from agent.checkin import checkin_body
    from agent.event import MAX_CHECKIN_BYTES, encode
    from agent.sim.demo import CCCD

    conf, state, row = stopped_station
    other = Outbox(tmp_path / "other" / "outbox.db", station="counter-old")
    small, big = (other.put(checkin_body(read_card(CCCD))) for _ in range(2))
    other.close()
    wide = {**big.payload, "problems": [{"code": "x", "message": ""}] * 2000}
    line = json.dumps(wide, ensure_ascii=False, separators=(",", ":"))
    wide["problems"] += [{"code": "x", "message": ""}] * ((64_990 - len(line.encode())) // 26)
    line = json.dumps(wide, ensure_ascii=False, separators=(",", ":"))
    line += " " * (64_990 - len(line.encode()))
    assert len(line.encode()) == 64_990 and len(encode(json.loads(line))) > 74_000 > MAX_CHECKIN_BYTES
    export = tmp_path / "export.jsonl"
    export.write_text(line + "\n" + json.dumps(small.payload, ensure_ascii=False) + "\n")
    done = cli("queue", "-c", str(conf), "import", str(export))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"line 1: {len(encode(json.loads(line)))} bytes, larger than a check-in may be ({MAX_CHECKIN_BYTES}" \
        in done.stderr and "could never send it" in done.stderr, done.stderr
    assert "1 check-in(s) queued" in done.stdout and "1 not imported" in done.stdout, done.stdout
    box = Outbox(state / "outbox.db", station="counter-it", admin=True, readonly=True)
    assert [r.id for r in box.undelivered()] == [row.id, small.id]
    box.close()


def test_an_undeliverable_check_in_is_listed_shown_in_status_exported_and_removed_only_with_its_export(
        stopped_station, tmp_path):
    conf, state, row = stopped_station
    box = Outbox(state / "outbox.db", station="counter-it")
    body = {k: v for k, v in row.payload.items() if k not in ("schema", "id", "seq", "station")}
    other = box.put({**body, "card": {**body["card"], "name": "Trần Thị Bích"}})
    assert box.set_aside(row.id, "the broker refused it: Packet too large")
    box.close()

    listed = cli("queue", "-c", str(conf), "list")
    lines = {line.split()[-1]: line for line in listed.stdout.splitlines()[1:]}
    assert "UNDELIVERABLE" in lines[row.id] and "QUEUED" in lines[other.id], listed.stdout
    shown = json.loads(cli("queue", "-c", str(conf), "show", row.id).stdout)
    assert shown["undeliverable"]["reason"] == "the broker refused it: Packet too large"
    status = cli("status", "-c", str(conf))
    assert status.returncode == 1 and "1 UNDELIVERABLE" in status.stdout, status.stdout
    assert "1 check-in(s) undeliverable" in status.stdout
    assert json.loads(cli("status", "-c", str(conf), "--json").stdout)["outbox"]["undeliverable"] == 1
    exported = tmp_path / "all.jsonl"
    assert cli("queue", "-c", str(conf), "export", str(exported)).returncode == 0
    assert [json.loads(x)["id"] for x in exported.read_text().splitlines()] == [row.id, other.id]

    no_file = cli("queue", "-c", str(conf), "remove", row.id)
    assert no_file.returncode == 2 and "--export" in no_file.stderr
    taken = tmp_path / "taken.jsonl"
    taken.write_text("an earlier removal\n")
    refused = cli("queue", "-c", str(conf), "remove", row.id, "--export", str(taken))
    assert refused.returncode == 2 and "exists" in refused.stderr and taken.read_text() == "an earlier removal\n"
    unknown = cli("queue", "-c", str(conf), "remove", row.id, "0193a0c0-0000-7000-8000-0000000000aa",
                  "--export", str(tmp_path / "new.jsonl"))
    assert unknown.returncode == 1 and "no check-in 0193a0c0" in unknown.stderr
    assert not (tmp_path / "new.jsonl").exists()
    box = Outbox(state / "outbox.db", station="counter-it", admin=True, readonly=True)
    assert box.depth() == 2                                   # nothing removed by a refused command
    box.close()

    out = tmp_path / "removed.jsonl"
    done = cli("queue", "-c", str(conf), "remove", row.id, "--export", str(out))
    assert done.returncode == 0 and "#1 undeliverable" in done.stdout and "1 undelivered in all" in done.stdout, \
        done.stdout + done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [json.loads(x) for x in out.read_text().splitlines()] == [row.payload]   # the full record
    box = Outbox(state / "outbox.db", station="counter-it", admin=True, readonly=True)
    assert box.get(row.id) is None and [r.id for r in box.undelivered()] == [other.id]
    box.close()
    assert cli("status", "-c", str(conf)).stdout.count("UNDELIVERABLE") == 0


# --- issue 32, item 7: `queue import` streams, and stops at the outbox's limit -----------------------

def _export_of(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A `queue export` file of `n` check-ins of another station."""
    from agent.checkin import checkin_body
    from agent.event import envelope
    from agent.outbox import uuid7
    from agent.sim.demo import BHYT15

    body = checkin_body(read_card(BHYT15))
    ids = [uuid7() for _ in range(n)]
    path = tmp_path / f"export-{n}.jsonl"
    with open(path, "w") as f:
        for seq, event_id in enumerate(ids, 1):
            f.write(json.dumps(envelope(body, event_id=event_id, seq=seq, station="counter-old"),
                               ensure_ascii=False) + "\n")
    return path, ids


def test_queue_import_stops_at_the_outbox_limit_and_leaves_room_for_patients(tmp_path):
    """On main, 150 check-ins went into an outbox limited to 100, after which every patient was
    refused. Now the import stops at 90 (max_events less a tenth, kept for the patients' own
    check-ins), says where and why, reads no further, and a second run once the station has sent
    some goes on from there."""
    from agent.checkin import checkin_body
    from agent.sim.demo import CCCD

    state = tmp_path / "state"
    conf = config(tmp_path, state, station="counter-new", extra="max_events = 100")
    export, ids = _export_of(tmp_path, 150)
    first = cli("queue", "import", str(export), "-c", str(conf))
    assert first.returncode == 1, first.stdout + first.stderr
    assert "import stopped at line 91" in first.stderr and "max_events = 100" in first.stderr, first.stderr
    assert "90 check-in(s) queued" in first.stdout and "STOPPED at the limit" in first.stdout, first.stdout
    station = Outbox(state / "outbox.db", station="counter-new", max_events=100, min_free_mb=0)
    assert [r.id for r in station.undelivered(200)] == ids[:90]
    patient = station.put(checkin_body(read_card(CCCD)))          # a patient is still stored
    station.mark_delivered(ids[:50])                              # the station sends some
    station.close()
    again = cli("queue", "import", str(export), "-c", str(conf), "--delete-after")
    assert again.returncode == 1 and "49 check-in(s) queued" in again.stdout and "90 already" in again.stdout, \
        again.stdout
    assert export.exists()                                        # not everything imported: kept
    box = Outbox(state / "outbox.db", station="counter-new", admin=True, readonly=True)
    assert box.depth() == 90 and [r.id for r in box.undelivered(200)][-1] == ids[138]
    assert patient.id in [r.id for r in box.undelivered(200)]
    box.close()


@pytest.mark.slow
def test_queue_import_streams_the_file(tmp_path):
    """On main every line was held in memory until the end (20 000 lines: 238 MB; on this branch 51 MB).
    Importing 10 000 check-ins takes no more memory than importing one, give or take a batch (on
    main: some 50 MB more)."""
    from support.daemon import ROOT

    def peak_kb(export: Path) -> int:
        folder = tmp_path / export.stem
        folder.mkdir()
        conf = config(folder, folder / "state", station="counter-new")
        code = ("import resource, sys\nfrom agent.cli import main\nrc = main(sys.argv[1:])\n"
                "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")
        done = subprocess.run([sys.executable, "-c", code, "queue", "import", str(export), "-c", str(conf)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        return int(done.stderr.split("PEAK")[-1].split()[0])

    one, _ = _export_of(tmp_path, 1)
    many, _ = _export_of(tmp_path, 10_000)
    grew = peak_kb(many) - peak_kb(one)
    assert grew < 15_000, f"the import of 10 000 check-ins took {grew / 1000:.0f} MB more than that of one"
