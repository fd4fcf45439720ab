"""Hostile and careless input, one test per finding of the reliability review (see
docs/reliability.md): config values, card digits, files written for IT, text from the hospital,
personal data in logs, the control socket, and admin commands that must answer in one line."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from agent.cards import read_card
from agent.config import ConfigError, MqttConfig, load_config, parse_config
from agent.outbox import Outbox
from support.broker import Subscriber
from support.daemon import FRAMES, ROOT, cli, config, replay_config

# --- 5: NaN and infinity -------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("checkin.cooldown_s", "nan"), ("outbox.retention_s", "nan"),
                                        ("outbox.retention_s", "inf"), ("camera.fps", "-inf")])
def test_nan_and_infinity_are_config_errors(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as err:
        parse_config(f"[{section}]\n{name} = {value}\n")
    assert f"{key} must be a finite number" in str(err.value)


# --- 6: ASCII digits only in card fields ----------------------------------------------------------

FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def test_non_ascii_digits_are_rejected_in_the_cccd_number_and_the_facility_code():
    from agent.sim.demo import BHYT15, CCCD

    number = CCCD.split("|")[0]
    cccd = read_card(CCCD.replace(number, number.translate(FULLWIDTH), 1))
    assert cccd.verdict == "invalid" and cccd.kind in ("cccd", "other")
    fields = BHYT15.split("|")
    fields[5] = fields[5].translate(ARABIC_INDIC)
    bhyt = read_card("|".join(fields))
    assert bhyt.verdict == "invalid" and "bad_facility" in [p.code for p in bhyt.problems]
    assert read_card(BHYT15).verdict in ("ok", "expired")     # the ASCII original still reads


# --- 7: files written for IT ----------------------------------------------------------------------

@pytest.fixture
def stopped_station(tmp_path):
    state = tmp_path / "state"
    box = Outbox(state / "outbox.db", station="counter-it")
    row = box.put({"read_at": "2026-11-24T08:00:00+07:00", "clock_synced": True, "kind": "cccd", "verdict": "ok",
                   "problems": [], "card": {"name": "Nguyễn Văn An", "id_number": "079090001234"}})
    box.close()
    return config(tmp_path, state), state, row


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


@pytest.mark.parametrize("content", ["[1, 2, 3]", "{not json", '{"pid": "%PID%", "updated_at": "soon"}',
                                     '{"pid": %PID%, "updated_at": 1e300, "camera": 5, "mqtt": [], "faults": "x"}'])
def test_status_with_a_damaged_status_file(stopped_station, content):
    conf, state, _ = stopped_station
    run = state / "run"
    run.mkdir(exist_ok=True)
    (run / "status.json").write_text(content.replace("%PID%", str(os.getpid())))
    for extra in ((), ("--json",)):
        out = cli("status", "-c", str(conf), *extra)
        assert out.returncode in (1, 2) and "Traceback" not in out.stderr, out.stderr   # stopped: a warning


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


def test_status_exits_1_on_a_warning_and_2_on_a_fault(stopped_station):
    """Like fleet, and as the README says: 0 ok, 1 a warning (here: the daemon is not running), 2 a
    fault (here: a damaged outbox kept aside)."""
    from agent.admin.status import FAULT, OK, WARNING, level

    conf, state, _ = stopped_station
    out = cli("status", "-c", str(conf))
    assert out.returncode == 1 and "check        WARNING: daemon not running" in out.stdout, out.stdout
    (state / "outbox.db.corrupt-20261124-080000").write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    out = cli("status", "-c", str(conf), "--json")
    assert out.returncode == 2 and json.loads(out.stdout)["faults"], out.stdout
    base = {"faults": [], "camera": {"fault": None}, "outbox": {}, "daemon": "running", "mqtt": {"connected": True},
            "clock_synced": True}
    assert level(base) == (OK, [])
    assert level({**base, "mqtt": {"connected": False}}) == (WARNING, ["broker disconnected"])
    assert level({**base, "camera": {"fault": "no frames"}})[0] == FAULT
    assert "`status` exits 0 when all is well, 1 on a warning" in (ROOT / "README.md").read_text()


def test_parse_with_standard_input_closed_and_an_ascii_terminal():
    from agent.sim.demo import CCCD

    closed = subprocess.run(f"'{sys.executable}' -m agent parse - <&-", shell=True, capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert closed.returncode == 2 and "no standard input" in closed.stderr and "Traceback" not in closed.stderr
    ascii_term = cli("parse", CCCD, env={"PYTHONIOENCODING": "ascii"})
    assert ascii_term.returncode == 0 and "Traceback" not in ascii_term.stderr
    assert "cccd: ok" in ascii_term.stdout and "Nguy\\u1ec5n" in ascii_term.stdout


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


# --- 9: text from the hospital --------------------------------------------------------------------

@pytest.mark.slow
def test_verdict_text_is_cleaned_and_logged_once_per_checkin(tmp_path, broker, caplog):
    from agent.mqtt.link import MqttLink

    box = Outbox(tmp_path / "o.db", station="counter-v")
    row = box.put({"card": {}})
    seen = []
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True,
                               keepalive_s=5), "counter-v", box, on_verdict=seen.append, backoff=(0.05, 0.5))
    caplog.set_level(logging.INFO)
    link.start()
    hospital = Subscriber(broker.port, "nothing/#", client_id="hospital")
    try:
        assert Subscriber.wait_for(lambda: link.state.connected, 10)
        time.sleep(0.3)  # the verdict subscription is in place
        evil = "OK\x1b[2J\x07\u202e forged\nINFO agent: check-in accepted"
        topic = "hospital/checkin/counter-v/verdict"
        for i in range(5000):
            body = {"id": row.id, "result": "rejected", "code": "007", "message": evil} if i % 2 == 0 else \
                "\x1b]0;garbage\x07"
            hospital.client.publish(topic, json.dumps(body) if isinstance(body, dict) else body, qos=0)
        hospital.client.publish(topic, json.dumps({"id": row.id, "result": "accepted"}), qos=1).wait_for_publish(10)
        time.sleep(1.5)
    finally:
        link.stop()
        hospital.close()
        box.close()
    assert len(seen) == 1                                   # one signal per check-in id
    message = seen[0].message
    assert "\x1b" not in message and "\x07" not in message and "\u202e" not in message and "\n" not in message
    mqtt_lines = [r for r in caplog.records if r.name == "agent.mqtt.link" and "ignored" in r.getMessage()]
    assert len(mqtt_lines) <= 2, len(mqtt_lines)            # not 5 000 lines
    assert all("\x1b" not in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)


# --- 10: personal data in logs --------------------------------------------------------------------

def test_rejected_card_birth_date_is_never_logged(tmp_path, caplog):
    from agent.checkin import Action, Decision
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station
    from agent.sim.demo import CCCD

    fields = CCCD.split("|")
    fields[3] = "31139876"                                  # a birth date that cannot be
    read = read_card("|".join(fields))
    assert read.verdict == "invalid"
    cfg = replay_config(tmp_path / "state")
    station = Station(cfg, feedback=Feedback(NoOutput()))
    caplog.set_level(logging.DEBUG, logger="agent")
    try:
        station._act(Decision(Action.REJECTED, read, "k"))
    finally:
        station.feedback.close()
        station.outbox.close()
    assert "rejected cccd code: bad_birth_date" in caplog.text
    assert "31139876" not in caplog.text and "3113" not in caplog.text
    assert "31139876" not in json.dumps(read.to_dict())     # nor in the problem message


# --- 11: the control socket -----------------------------------------------------------------------

def test_control_socket_serves_clients_concurrently_with_a_deadline(tmp_path):
    from agent.control import ControlServer, request

    server = ControlServer(tmp_path / "c.sock", {"snapshot": lambda: b"JPEG"}).start()
    idle = []
    try:
        for _ in range(3):                                  # three clients that never say anything
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(tmp_path / "c.sock"))
            idle.append(s)
        t0 = time.time()
        assert request(tmp_path / "c.sock", "snapshot", timeout=3) == b"JPEG"
        assert time.time() - t0 < 1.0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:   # a command in two writes
            s.connect(str(tmp_path / "c.sock"))
            s.sendall(b"snap")
            time.sleep(0.2)
            s.sendall(b"shot\n")
            assert s.recv(64).startswith(b"OK 4\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:   # an endless line is cut off
            s.connect(str(tmp_path / "c.sock"))
            s.sendall(b"x" * 10_000)
            assert s.recv(64).startswith(b"ERR expected one command line")
    finally:
        for s in idle:
            s.close()
        server.stop()
    assert not (tmp_path / "c.sock").exists()


def test_idle_clients_never_keep_it_from_a_snapshot(tmp_path):
    """Eight idle local clients made `snapshot` answer busy forever (each held one of the eight
    slots until its deadline, and the attacker opened a new one as each closed). A client that
    has sent its command is served first; idle ones wait in a pool of their own, the oldest
    dropped when it is full, and time out."""
    from agent.control import ControlServer, request

    path = tmp_path / "c.sock"
    server = ControlServer(path, {"snapshot": lambda: b"JPEG"}).start()
    stop = threading.Event()
    held: list[socket.socket] = []

    def attacker() -> None:                         # keeps 40 silent clients connected, reopening any dropped
        while not stop.is_set():
            for s in list(held):
                try:
                    if s.recv(64, socket.MSG_DONTWAIT) == b"":
                        raise OSError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                s.close()
                held.remove(s)
            while len(held) < 40:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(path))
                except OSError:
                    s.close()
                    break
                held.append(s)
            time.sleep(0.01)
    t = threading.Thread(target=attacker, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        answers = []
        for _ in range(4):
            t0 = time.time()
            try:
                answers.append((request(path, "snapshot", timeout=3), time.time() - t0))
            except RuntimeError as exc:
                answers.append((str(exc).encode(), time.time() - t0))
            time.sleep(0.7)
        assert all(a == b"JPEG" and took < 1.0 for a, took in answers), answers
    finally:
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        server.stop()


# --- 12: config gaps -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needle", [
    ('[station]\nid = ""\n', "station.id may use"),
    ('[mqtt]\ntopic_prefix = "a\\u0000b"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a\\nb"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a/+/b"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = "a/#"\n', "topic_prefix must not contain"),
    ('[mqtt]\ntopic_prefix = ""\n', "topic_prefix must not be empty"),
    ('[mqtt]\ntls = false\n', "allow_insecure = true"),
])
def test_config_gaps_are_errors(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert needle in str(err.value)


def test_a_byte_order_mark_is_accepted(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_bytes(b"\xef\xbb\xbf[station]\nid = \"counter-bom\"\n")
    assert load_config(conf).station.id == "counter-bom"


def test_plaintext_is_warned_and_tls_to_a_plain_port_is_named(tmp_path, broker, caplog):
    from agent.mqtt.link import MqttLink

    box = Outbox(tmp_path / "o.db", station="s")
    caplog.set_level(logging.WARNING)
    plain = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True), "s", box)
    assert "WITHOUT TLS" in caplog.text
    plain.client.socket()  # never started
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=True), "s", box, backoff=(0.1, 0.2))
    link.start()
    try:
        assert Subscriber.wait_for(lambda: link.state.last_error and "TLS port" in link.state.last_error, 10), \
            link.state.last_error
        assert f"is 127.0.0.1:{broker.port} a TLS port?" in link.state.last_error
    finally:
        link.stop()
        box.close()


# --- supervision: the worker base and the watchdog ------------------------------------------------

def test_a_crashing_worker_is_a_fault_then_restarts_and_logs_one_traceback(caplog):
    from agent.worker import Worker

    class Flaky(Worker):
        def __init__(self, crashes: int):
            super().__init__("flaky", restart_backoff=(0.01, 0.05))
            self.left, self.runs = crashes, 0

        def work(self) -> None:
            self.runs += 1
            if self.left:
                self.left -= 1
                raise RuntimeError("boom \x1b[31m")
            while not self.wait(0.05):
                pass

    w = Flaky(3).start()
    try:
        assert Subscriber.wait_for(lambda: w.runs == 4, 5)
        assert w.crashes == 3 and "flaky worker crashed" in w.fault and "\x1b" not in w.fault
        assert w.alive and w.healthy()
    finally:
        w.stop()
    assert not w.alive and w.fault is None
    assert caplog.text.count("Traceback") == 1 and caplog.text.count("crashed again") == 2


@pytest.mark.slow
def test_watchdog_pings_stop_while_a_worker_is_stuck(tmp_path, broker, monkeypatch):
    from agent import failpoints
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station

    pings = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pings.bind(str(tmp_path / "notify"))
    pings.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")            # a ping every 0.2 s
    cfg = replay_config(tmp_path / "state")
    cfg.camera.loop = True
    cfg.mqtt = MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True)
    station = Station(cfg, feedback=Feedback(NoOutput()))
    station.link.stall_s = 1.0
    release = threading.Event()
    runner = threading.Thread(target=station.run)
    runner.start()

    def count_pings(seconds: float) -> int:
        n, end = 0, time.time() + seconds
        while time.time() < end:
            try:
                n += pings.recv(256) == b"WATCHDOG=1"
            except TimeoutError:
                pass
        return n
    try:
        assert count_pings(1.5) >= 3                           # all healthy: pings flow
        failpoints.arm("mqtt.pump", 1, action=release.wait)    # the sender hangs in a call
        time.sleep(1.5)
        count_pings(0.3)
        assert count_pings(1.5) == 0                           # systemd would restart the service
        assert any("mqtt-link worker stuck" in f for f in station.faults())
        release.set()
        assert count_pings(1.5) >= 3                           # unstuck: pings again
    finally:
        release.set()
        failpoints.arm("mqtt.pump", 0)
        station.stop()
        runner.join(10)
        broker.stop()
        pings.close()
