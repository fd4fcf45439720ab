"""`scanner-agent chip test`, doctor's chip line, `status` and the health message's `chip_reader`
(issue 33), through agent.chip.reader's factory: the readers' module is swapped for
tests/support/sim_reader.py, a pad on which the simulated CCCD chip (agent/sim/chip.py) is laid."""

from __future__ import annotations

import time

import pytest

from agent import cli, runstate
from agent.admin import doctor
from agent.admin import status as admin_status
from agent.chip import reader
from agent.config import MqttConfig, load_config
from agent.feedback import Feedback, NoOutput
from agent.mqtt.schemas import errors as schema_errors
from agent.sim.chip import SimCard, SimChip, make_pki
from agent.station import Station
from agent.status_types import ChipStatus
from support import sim_reader
from support.daemon import config
from support.payloads import CCCD
from support.sim_reader import CCCD_CARD

CARD = CCCD_CARD


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sim(monkeypatch):
    """The reader factory is the simulated pad's, empty at first."""
    monkeypatch.setattr(reader, "FACTORY_MODULES", ("support.sim_reader",))
    monkeypatch.setattr(sim_reader, "MISSING", None)
    sim_reader.PAD.lift()
    return sim_reader.PAD


def conf(tmp_path, pki, chip: str = 'reader = "pcsc"') -> str:
    path = config(tmp_path, tmp_path / "state", extra=f'[chip]\n{chip}\ncsca_dir = "{pki.csca_dir}"\ntimeout_s = 2')
    return str(path)


def test_chip_test_reads_the_card_and_says_what_it_verified(tmp_path, pki, sim, capsys):
    sim.place(SimChip(CARD, pki))
    assert cli.main(["chip", "test", "-c", conf(tmp_path, pki), CCCD]) == 0
    out = capsys.readouterr().out
    for line in ("access     pace-can", "verified   chain", "clone      chip", "reason     -", "mismatch   none",
                 "fields     id_number, name, birth_date (values: --reveal)"):
        assert line in out, out
    assert CARD.name not in out and "1990" not in out             # names only, without --reveal
    sim.place(SimChip(CARD, pki))
    assert cli.main(["chip", "test", "--reveal", "-c", conf(tmp_path, pki), CCCD]) == 0
    assert f"  name     {CARD.name}" in capsys.readouterr().out


def test_chip_test_another_persons_card_and_no_card(tmp_path, pki, sim, capsys):
    other = SimCard(id_number=CARD.id_number, name="Trần Thị Bích", birth_date=CARD.birth_date,
                    issued=CARD.issued, expiry=CARD.expiry)
    sim.place(SimChip(other, pki))
    assert cli.main(["chip", "test", "-c", conf(tmp_path, pki), CCCD]) == 1
    out = capsys.readouterr().out
    assert "verified   failed" in out and "mismatch   name" in out
    sim.lift()
    assert cli.main(["chip", "test", "--wait", "0.3", "-c", conf(tmp_path, pki), CCCD]) == 1
    out = capsys.readouterr().out
    assert "verified   absent" in out and "reason     no card on the reader within 0.3 s" in out


def test_chip_test_without_a_reader_or_a_cccd_is_a_usage_error(tmp_path, pki, sim, capsys):
    assert cli.main(["chip", "test", "-c", conf(tmp_path, pki, 'reader = "none"'), CCCD]) == 2
    assert "no chip reader configured" in capsys.readouterr().err
    assert cli.main(["chip", "test", "-c", conf(tmp_path, pki), "not a card"]) == 2
    assert "not a CCCD's QR" in capsys.readouterr().err


def test_a_build_without_reader_support_says_so_in_one_line(tmp_path, pki, monkeypatch, capsys):
    monkeypatch.setattr(reader, "FACTORY_MODULES", ("agent.chip.no_such_readers",))
    assert cli.main(["chip", "test", "--wait", "0.5", "-c", conf(tmp_path, pki), CCCD]) == 1
    out = capsys.readouterr().out
    assert "reason     no chip reader: chip reader 'pcsc': this build has no reader support" in out
    check = doctor.check_chip(load_config(conf(tmp_path, pki)))
    assert not check.ok and check.line().startswith("FIX  chip") and "no reader support" in check.line()


def test_doctor_checks_the_reader(tmp_path, pki, sim, monkeypatch, capsys):
    cfg = load_config(conf(tmp_path, pki))
    check = doctor.check_chip(cfg)
    assert check.ok and not check.warning
    assert check.line() == f"ok   chip       chip reader: pcsc reader (simulated) answers; 1 CSCA file(s) in {pki.csca_dir}"
    monkeypatch.setattr(sim_reader, "MISSING", "no PC/SC reader found (is it plugged in?)")
    check = doctor.check_chip(cfg)
    assert not check.ok and "no PC/SC reader found" in check.line() and 'reader = "none"' in check.line()
    assert doctor.check_chip(load_config(conf(tmp_path, pki, 'reader = "none"'))) is None
    # in doctor's report, among the others
    cli.main(["doctor", "-c", conf(tmp_path, pki)])
    assert "chip       chip reader: no PC/SC reader found" in capsys.readouterr().out


def test_status_and_health_show_the_reader(tmp_path, pki, sim, monkeypatch):
    cfg = load_config(conf(tmp_path, pki))
    cfg.mqtt = MqttConfig(host="127.0.0.1", port=1, tls=False, allow_insecure=True)
    st = Station(cfg, feedback=Feedback(NoOutput()))        # the reader through the factory: the pad
    try:
        sim.place(SimChip(CARD, pki))
        from agent.cards import read_card
        st.chip.start()
        ticket, began = st.chip.request(read_card(CCCD).card), time.monotonic()
        while (out := st.chip.outcome(ticket)) is None:
            assert time.monotonic() - began < 5
            time.sleep(0.01)
        assert out.result.verified == "chain"
        health = st.link.health()
        assert health["chip_reader"] == {"reader": "pcsc", "ok": True, "problem": None, "reads": {"chain": 1}}
        assert schema_errors("health", health) == []
        status = st.status()
        assert isinstance(runstate.DaemonStatus.from_dict(status.to_dict()).workers["chip"], ChipStatus)
        s = {"station": "s", "version": "v", "service": "active", "daemon": "running", "status_stale_s": None,
             "camera": {"source": "replay"}, "mqtt": {"configured": False}, "outbox": {"queue_depth": 0},
             "clock_synced": True, "disk_free_mb": 100, "faults": st.faults(), "counters": None,
             "workers": {k: w.to_dict() for k, w in status.workers.items()}}
        assert "chip reader  pcsc ok; reads: 1 chain" in admin_status.render(s)
        # the reader gone: a fault in status and health (fault code chip_reader), not on the LEDs
        monkeypatch.setattr(sim_reader, "MISSING", "no PC/SC reader found")
        st.chip.stop()
        st.chip = type(st.chip)(cfg.chip)
        st.chip._try_open()
        health = st.link.health()
        assert health["chip_reader"]["ok"] is False and health["chip_reader"]["problem"].endswith("no PC/SC reader found")
        assert "chip_reader" in health["fault_codes"] and schema_errors("health", health) == []
        assert not any(f.startswith("chip reader") for f in st.faults(leds=True))
        s["faults"], s["workers"] = st.faults(), {k: w.to_dict() for k, w in st.status().workers.items()}
        text = admin_status.render(s)
        assert "chip reader  pcsc NOT usable: chip reader 'pcsc': no PC/SC reader found" in text
        assert admin_status.level(s)[0] == admin_status.FAULT
        monkeypatch.setattr(doctor.runstate, "read", lambda path: st.status())
        probe = doctor._probe_health(cfg)
        assert probe["chip_reader"]["ok"] is False and schema_errors("health", probe) == []
    finally:
        st.chip.stop()
        st.outbox.close()
