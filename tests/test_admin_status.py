"""`scanner-agent status` (agent/admin/status.py): its exit codes, a damaged status file, and
the daemon's answer on the control socket bounded before parsing."""

from __future__ import annotations

import json
import os

import pytest

from support.daemon import ROOT, cli, status_of


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
