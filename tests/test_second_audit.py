"""The second security audit (issue 21), station side: one test per finding, numbered as in
docs/reliability.md "Security findings (second audit)"."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.outbox import Outbox
from support.daemon import cli, config


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


# --- 2: card data never becomes a key press ------------------------------------------------------

HOSTILE = ["\n", "\t", "\r\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u202e"]


@pytest.mark.parametrize("evil", HOSTILE)
def test_card_data_with_control_characters_is_typed_and_sent_with_them_removed(evil):
    from agent.cards import read_card
    from agent.config import Config
    from agent.outputs import hid
    from agent.outputs.devices import Output
    from agent.sim.demo import BHYT15, CCCD

    cfg = Config()
    bhyt = BHYT15.replace("|", "|" + evil, 3)                  # at the start of fields 2 to 4
    read = read_card(bhyt)
    assert read.kind == "bhyt"
    keyboard = Output(cfg.keyboard, None)
    typed = keyboard.text("bhyt", read.card, bhyt)
    assert typed == BHYT15 + "\n"                              # one Enter: the template's own
    assert hid.decode(hid.encode(typed)) == typed
    assert hid.decode(hid.encode_alt_numpad(typed)) == typed
    serial = Output(cfg.serial, None)
    cccd = CCCD.replace("|", evil + "|", 1)
    sent = serial.text("cccd", read_card(cccd).card, cccd)
    assert sent == CCCD + "\n"
    # the card's own fields, too: only {tab}/{enter} of the template are keys
    card = {**read.card, "card_number": "AB\t12\n3\r"}
    from agent.outputs.template import render
    assert render("{card_number}{tab}{birth_date}{enter}", card, bhyt) == f"AB123\t{read.card['birth_date']}\n"


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
            for _ in range(3):
                faults = station.faults(leds=True)
        assert [f for f in faults if "damaged file" in f] == [
            f"outbox: damaged file {pending_kept} kept with check-ins that could not all be read; "
            f"see 'scanner-agent queue import {pending_kept}'"]
        said = [r.getMessage() for r in caplog.records if str(kept) in r.getMessage()]
        assert len(said) == 1 and "no undelivered check-in" in said[0], said
        # once its check-ins are imported, the other one is settled too
        station.outbox.import_rows([(r.id, r.payload, r.created_at, 0) for r in pending])
        assert not [f for f in station.faults(leds=True) if "damaged file" in f]
    finally:
        station.outbox.close()


# --- 13: config check refuses what run refuses --------------------------------------------------

@pytest.mark.parametrize("extra, needle", [
    ('[station]\nstate_dir = "/proc/scanner-agent/state"\n[feedback]\nbackend = "none"\n',
     "station.state_dir '/proc/scanner-agent/state' does not exist and cannot be created"),
    ('[station]\nstate_dir = "/proc/self"\n[feedback]\nbackend = "none"\n',
     "station.state_dir '/proc/self' is not writable"),
    ('[station]\nstate_dir = "STATE"\n[feedback]\nbackend = "gpio"\ngreen_pin = 17\nred_pin = 17\n',
     "feedback.red_pin = 17 is already feedback.green_pin"),
    ('[station]\nstate_dir = "STATE"\n[feedback]\nbackend = "gpio"\namber_pin = 22\n',
     "feedback.buzzer_pin = 22 is already feedback.amber_pin"),
])
def test_config_check_refuses_a_state_dir_that_cannot_be_made_and_a_shared_pin(tmp_path, extra, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(extra.replace("STATE", str(tmp_path / "state")))
    check = cli("config", "check", str(conf))
    assert check.returncode == 2 and needle in check.stderr and "Traceback" not in check.stderr, check.stderr
    assert not list(tmp_path.glob("**/.scanner-agent-check-*"))


# --- 15: the hospital's words are quoted and labelled on the console line -----------------------

@pytest.mark.parametrize("message", ["check-in #999 bhyt ok Ng*** V** A* (no problems)",
                                     'ok" check-in #999 bhyt ok "'])
def test_verdict_text_is_quoted_and_labelled_as_the_hospitals_words(tmp_path, caplog, message):
    import json
    import logging
    import re
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import ConsoleOutput
    from agent.mqtt.messages import Verdict
    from agent.station import Station
    from support.daemon import RECORDED

    shown = []

    class Console(ConsoleOutput):
        def announce(self, signal, detail):
            shown.append(detail)

    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    station = Station(cfg, feedback=Feedback(Console()))
    try:
        with caplog.at_level(logging.INFO):
            station.on_verdict(Verdict("0193a0c0-0000-7000-8000-000000000001", "accepted", code="OK",
                                       message=message))
            deadline = __import__("time").time() + 5
            while not shown and __import__("time").time() < deadline:
                __import__("time").sleep(0.02)
    finally:
        station.feedback.close()
        station.outbox.close()
    assert shown == [f"hospital's words: {json.dumps('OK ' + message, ensure_ascii=False)}"]
    # one JSON string after the label: a quote in the text cannot close it early
    assert json.loads(shown[0].removeprefix("hospital's words: ")) == "OK " + message
    for line in [*shown, *(r.getMessage() for r in caplog.records)]:
        assert not RECORDED.match(line) and not re.match(r"^check-in #", line), line


# --- 14: the USB gadget unit is sandboxed as far as configfs allows --------------------------------

GADGET_UNIT = Path(__file__).resolve().parents[1] / "systemd" / "scanner-agent-usb-gadget.service"


def _exposure(unit: Path) -> float:
    import re
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: install Debian's 'systemd' package (.ci/run does)"
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


def test_the_usb_gadget_unit_is_sandboxed_and_verifies(tmp_path):
    import shutil
    import subprocess

    text = GADGET_UNIT.read_text()
    for line in ["ProtectSystem=strict", "ReadWritePaths=/sys/kernel/config", "ProtectKernelTunables=yes",
                 "ProtectKernelModules=yes", "CapabilityBoundingSet=\n", "PrivateNetwork=yes",
                 "RestrictAddressFamilies=AF_UNIX", "SystemCallFilter=@system-service", "NoNewPrivileges=yes",
                 "Requires=sys-kernel-config.mount", "ExecStartPre=-+"]:
        assert line in text, line
    assert _exposure(GADGET_UNIT) <= 2.5
    # verify: ExecStart must name an existing executable, so point it at a stand-in
    exe = tmp_path / "usb-gadget.sh"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / GADGET_UNIT.name
    unit.write_text(text.replace("/opt/scanner-agent/usb-gadget.sh", str(exe)))
    proc = subprocess.run([shutil.which("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_the_gadget_script_needs_no_capability(tmp_path):
    """What the unit leaves it: root's uid on root-owned files, no capability, no new privileges."""
    import subprocess

    (tmp_path / "etc/scanner-agent").mkdir(parents=True)
    (tmp_path / "etc/scanner-agent/config.toml").write_text('[station]\nid = "counter-07"\n')
    os.chmod(tmp_path / "etc/scanner-agent/config.toml", 0o640)
    (tmp_path / "sys/class/udc/fe980000.usb").mkdir(parents=True)
    script = GADGET_UNIT.parent / "usb-gadget.sh"
    for args in ((), ("--remove",)):
        done = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs",
                               "bash", str(script), "--root", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout


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
