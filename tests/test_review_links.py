"""The state directory belongs to the service account: `status` and `snapshot` (run as root) read
its status file and talk to its control socket without following a link, and bound what they read
before parsing it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent import runstate
from agent.control import request


@pytest.fixture
def daemon_like():
    """A live process whose command line says 'agent', as runstate.read checks."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "agent"])
    # Popen returns once exec has begun; the kernel fills /proc/PID/cmdline a moment later (an
    # empty one was seen on a loaded machine), so wait for it as a daemon's would long be filled
    deadline = time.monotonic() + 10
    while b"agent" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the stand-in process never showed its command line"
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def status_of(pid: int) -> runstate.DaemonStatus:
    return runstate.DaemonStatus(pid=pid, version="t", station="s", started_at=time.time(), updated_at=time.time())


def test_status_file_is_read_only_as_a_regular_file_never_through_a_link(tmp_path, daemon_like):
    state = tmp_path / "state"
    state.mkdir()
    elsewhere = tmp_path / "elsewhere.json"
    runstate.write(elsewhere, status_of(daemon_like))
    assert runstate.read(elsewhere) is not None          # a valid status where it lies
    (state / "status.json").symlink_to(elsewhere)
    assert runstate.read(state / "status.json") is None  # through a link: not read
    fifo = state / "fifo.json"
    os.mkfifo(fifo)                                      # a FIFO nobody writes: never a hang
    assert runstate.read(fifo) is None


def test_status_file_nested_or_huge_is_none_not_a_traceback(tmp_path, daemon_like):
    path = tmp_path / "status.json"
    path.write_text('{"pid": %d, "updated_at": %f, "camera": %s}'
                    % (daemon_like, time.time(), "[" * 100_000 + "]" * 100_000))
    assert runstate.read(path) is None
    path.write_text('{"pid": %d, "updated_at": %f, "version": "%s"}'
                    % (daemon_like, time.time(), "x" * (runstate.MAX_STATUS_BYTES + 10)))
    assert runstate.read(path) is None


def test_control_request_never_connects_through_a_link(tmp_path):
    real = tmp_path / "other-program.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(real))
    srv.listen()
    srv.settimeout(0.5)
    got: list[bytes] = []

    def serve():
        try:
            conn, _ = srv.accept()
            got.append(conn.recv(64))
            conn.sendall(b"OK 2\n{}")
            conn.close()
        except OSError:
            pass

    state = tmp_path / "state"
    state.mkdir()
    (state / "control.sock").symlink_to(real)
    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises(OSError):
        request(state / "control.sock", "status", timeout=1)
    t.join()
    assert got == []                                     # the other program heard nothing
    t = threading.Thread(target=serve)
    t.start()
    assert request(real, "status", timeout=1) == b"{}"   # the socket itself still answers
    t.join()
    srv.close()


def test_fleet_summary_row_of_the_cut_stations_is_not_a_version(monkeypatch):
    """Beyond MAX_STATIONS the rest is one row (issue 21 B) whose version is '-': the version note
    (issue 26) must not count it as a second version of a fleet that runs one."""
    from datetime import datetime, timezone

    from agent.admin import fleet

    monkeypatch.setattr(fleet, "MAX_STATIONS", 2)
    at = datetime.now(timezone.utc).isoformat()
    stations = {}
    for i in range(3):
        sid = f"st-{i}"
        stations[sid] = fleet.Station(sid, cut=i >= fleet.MAX_STATIONS)
        stations[sid].status = {"state": "online", "at": at, "version": "0.4.0"}
        if i < fleet.MAX_STATIONS:
            stations[sid].health = {"at": at, "version": "0.4.0", "queue_depth": 0, "clock_synced": True}
        else:
            stations[sid].status = {"state": "online"}
    rows = fleet.assess(stations)
    assert len(rows) == 3 and rows[-1].station.startswith("(+1")
    assert fleet.versions(rows) is None
    # --json: the figures are numbers or null in every row, the summary row's too
    cut = json.loads(fleet.as_json(rows))[-1]
    assert cut["queue"] is None and cut["since_s"] is None and cut["check"] == "UNKNOWN", cut
    stations["st-1"].status["version"] = "0.3.9"
    assert fleet.versions(fleet.assess(stations)).startswith("2 versions in the fleet: 0.3.9 on 1, 0.4.0 on 1")


def test_a_deeply_nested_verdict_is_refused_before_parsing(tmp_path):
    """Replies from the broker are bounded in nesting before json parses them (the rule the fleet
    view and the consumer follow since issue 21), not left to Python's recursion limit."""
    from types import SimpleNamespace

    from agent.config import MqttConfig
    from agent.mqtt.link import MqttLink
    from agent.outbox import Outbox

    box = Outbox(tmp_path / "outbox.db", station="s", max_events=100, min_free_mb=0)
    link = MqttLink(MqttConfig(host="127.0.0.1", port=9, tls=False, allow_insecure=True), "s", box)
    said: list[tuple] = []
    link._ignore = lambda *a: said.append(a)
    try:
        link._on_message(None, None, SimpleNamespace(topic=link.topics["verdict"], payload=b"[" * 2000,
                                                     retain=False))
    finally:
        box.close()
    assert len(said) == 1 and said[0][2] == "malformed" and "nested" in said[0][3], said


def test_status_from_memory_bounds_the_sockets_answer_before_parsing(tmp_path, monkeypatch):
    """`status` asks the daemon's control socket (issue 21); the answer is the service account's
    and is bounded in nesting before parsing: a deep one falls back to the status file's view."""
    from agent.admin import status as status_mod

    deep = b"[" * 500 + b"]" * 500
    seen: list[bytes] = []

    def fake_loads(payload, **kw):
        seen.append(payload)
        return real(payload, **kw)

    from agent import jsonbound
    real = jsonbound.loads
    monkeypatch.setattr(jsonbound, "loads", fake_loads)
    monkeypatch.setattr("agent.control.request", lambda *a, **k: deep)
    stale = status_of(os.getpid())
    assert status_mod.from_memory(tmp_path, stale) is stale
    assert seen == [deep]          # refused by the bound (ValueError), not by Python's recursion limit


@pytest.fixture
def full_state_dir(tmp_path):
    """A state dir on a small tmpfs with every inode used: nothing more can be made in it."""
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs and needs root: {proc.stderr.strip()}")
    try:
        state = mount / "state"
        state.mkdir()
        n = 0
        while True:
            try:
                (state / f"f{n}").touch()
            except OSError:
                break
            n += 1
        yield state
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_not_a_config_error(full_state_dir):
    """`config check`, `run` and `status` try to make a folder in state_dir (issue 21). On a full
    disk that fails with ENOSPC: a runtime fault the station reports and recovers from, not a
    config error (exit 2, which systemd never restarts: RestartPreventExitStatus=2)."""
    from agent.config import dir_problem, parse_config

    state = full_state_dir
    with pytest.raises(OSError):
        (state / "one-more").mkdir()
    assert dir_problem(str(state)) is None
    parse_config(f'[station]\nstate_dir = "{state}"\n')   # no ConfigError


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
