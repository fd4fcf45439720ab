"""The station as a USB scanner: HID keyboard reports, templates, the USB gadget script, and the
keyboard and serial writers against FIFOs fed by a real `scanner-agent run` (no USB host here)."""

from __future__ import annotations

import os
import string
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.config import ConfigError
from agent.outputs.checks import parse_config   # with the outputs' checks of templates
from agent.outputs import hid
from agent.outputs.template import render
from support.daemon import ROOT, Daemon, cli, config
from support.payloads import BHYT15
from support.wait import wait_for

GADGET = ROOT / "systemd" / "usb-gadget.sh"


# --- HID reports ---------------------------------------------------------------------------------

def test_every_printable_ascii_character_round_trips():
    text = string.printable.replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    reports = hid.encode(text)
    assert all(len(r) == 8 for r in reports) and reports[1::2] == [hid.RELEASE] * len(text)
    assert hid.decode(reports) == text
    assert hid.decode(hid.encode("aa")) == "aa"          # a repeated key is released in between
    with pytest.raises(ValueError, match="cannot type"):
        hid.encode("Nguyễn")


def test_default_templates_round_trip_through_the_keyboard():
    from agent.cards import read_card
    from agent.config import Config
    from agent.sim.demo import BHYT10, BHYT15, CCCD

    k = Config().keyboard
    for payload in (BHYT15, BHYT10, CCCD):
        read = read_card(payload)
        text = render(getattr(k, f"template_{read.kind}"), read.card, payload)
        assert hid.decode(hid.encode(text)) == text
        assert text == (payload + "\n" if read.kind == "bhyt" else read.card["id_number"] + "\n")


def test_what_a_keyboard_cannot_type_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        parse_config('[output.keyboard]\nenabled = true\ntemplate_cccd = "{name}{enter}"\nsuffix = "đ"\n')
    text = str(err.value)
    assert ":3: output.keyboard.template_cccd" in text and "{name} may hold Vietnamese" in text
    assert ":4: output.keyboard.suffix" in text and "cannot type 'đ'" in text
    ok = parse_config('[output.serial]\nenabled = true\ntemplate_cccd = "{name}|{id_number}{enter}"\n')
    assert ok.serial.enabled and not ok.keyboard.enabled
    with pytest.raises(ConfigError, match="unknown section"):
        parse_config("[output.printer]\nenabled = true\n")


# --- the USB gadget script -----------------------------------------------------------------------

def gadget(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GADGET), "--root", str(root), *args], capture_output=True, text=True,
                          timeout=30)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(root.rglob("*"))}


def test_gadget_script_builds_a_keyboard_and_serial_composite_idempotently(tmp_path):
    (tmp_path / "etc/scanner-agent").mkdir(parents=True)
    (tmp_path / "etc/scanner-agent/config.toml").write_text('[station]\nid = "counter-07"\n')
    first = gadget(tmp_path)
    assert first.returncode == 0 and "dtoverlay=dwc2" in first.stderr and "not bound" in first.stdout
    g = tmp_path / "sys/kernel/config/usb_gadget/scanner-agent"
    assert (g / "strings/0x409/serialnumber").read_text().strip() == "counter-07"
    assert "scanner-agent" in (g / "strings/0x409/product").read_text()
    hidf = g / "functions/hid.usb0"
    assert (hidf / "protocol").read_text().strip() == "1" and (hidf / "report_length").read_text().strip() == "8"
    desc = (hidf / "report_desc").read_bytes()
    assert desc[:4] == bytes([0x05, 0x01, 0x09, 0x06]) and desc[-1] == 0xC0 and len(desc) == 63  # boot keyboard
    assert (g / "configs/c.1/hid.usb0").is_symlink() and (g / "configs/c.1/acm.usb0").is_symlink()
    before = tree(tmp_path)
    assert gadget(tmp_path).returncode == 0 and tree(tmp_path) == before       # a second run changes nothing
    (tmp_path / "sys/class/udc/fe980000.usb").mkdir(parents=True)              # the Pi's controller appears
    bound = gadget(tmp_path)
    assert bound.returncode == 0 and (g / "UDC").read_text().strip() == "fe980000.usb"
    removed = gadget(tmp_path, "--remove")
    assert removed.returncode == 0 and not g.exists()
    assert "nothing to remove" in gadget(tmp_path, "--remove").stdout


def test_installer_adds_the_gadget_only_when_asked(tmp_path):
    env = {**os.environ, "SCANNER_AGENT_PIP_ARGS": "--no-deps --no-build-isolation"}
    run = subprocess.run(["bash", str(ROOT / "systemd/install.sh"), "--root", str(tmp_path), "--usb-gadget",
                          "--dry-run"], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0 and "usb-gadget.sh" in run.stdout and "dtoverlay=dwc2" in run.stdout


# --- writers against FIFOs, fed by the real daemon ------------------------------------------------

class Host:
    """The counter PC's end of a FIFO: reads everything (or, stalled, nothing)."""

    def __init__(self, path: Path, read: bool = True):
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self.reading = read
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.reading:
                try:
                    chunk = os.read(self.fd, 65536)
                    self.data += chunk
                except BlockingIOError:
                    pass
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        os.close(self.fd)


def outputs_config(tmp_path: Path, kb: Path, ser: Path, timeout: float = 5.0) -> Path:
    return config(tmp_path, tmp_path / "state", extra=f"""
[output.keyboard]
enabled = true
device = "{kb}"
timeout_s = {timeout}
[output.serial]
enabled = true
device = "{ser}"
timeout_s = {timeout}
""")


@pytest.mark.slow
def test_every_checkin_is_typed_and_sent_once_in_order(tmp_path):
    from agent.outbox import Outbox

    kb, ser = Host(tmp_path / "hidg0"), Host(tmp_path / "ttyGS0")
    d = Daemon(outputs_config(tmp_path, tmp_path / "hidg0", tmp_path / "ttyGS0"))
    try:
        assert d.wait_for(lambda: len(d.recorded()) >= 6, 60), d.log[-2000:]
    finally:
        d.stop()
        time.sleep(0.3)
        kb.close()
        ser.close()
    box = Outbox(tmp_path / "state" / "outbox.db", station="x", admin=True, readonly=True)
    rows = [r for r in box.iter_pending()]
    box.close()
    typed = hid.decode([bytes(kb.data[i:i + 8]) for i in range(0, len(kb.data), 8)]).splitlines()
    sent = ser.data.decode("utf-8").splitlines()
    assert len(rows) == len(d.recorded()) and len(typed) == len(sent) == len(rows), (len(rows), len(typed), len(sent))
    for row, t, s in zip(rows, typed, sent):
        card = row.payload["card"]
        if row.payload["kind"] == "bhyt":
            assert t == s and t.startswith(card["card_number"])           # the exact QR text
        else:
            assert t == card["id_number"] and s.startswith(card["id_number"] + "|")
            assert card["name"] in s                                       # UTF-8 exactly on serial


@pytest.mark.slow
def test_a_host_that_stops_reading_never_slows_the_scan_loop(tmp_path):
    kb = Host(tmp_path / "hidg0", read=False)                                # the PC froze
    ser = Host(tmp_path / "ttyGS0")
    conf = outputs_config(tmp_path, tmp_path / "hidg0", tmp_path / "ttyGS0", timeout=0.5)
    d = Daemon(conf)
    try:
        # the pipe fills after a dozen lines; from then on every line to the keyboard times out
        assert d.wait_for(lambda: any("keyboard output: no host reading" in f for f in d.status()["faults"]), 90), \
            d.log[-2000:]
        before, recorded = d.status()["counters"], len(d.recorded())
        time.sleep(4)
        after = d.status()
        assert after["daemon"] == "running"
        assert after["counters"]["decoded"] - before["decoded"] >= 30          # ~20 fps kept being decoded
        assert len(d.recorded()) >= recorded + 3                              # and check-ins recorded
        assert after["workers"]["output-keyboard"]["dropped"] >= 1
        assert len(ser.data.decode().splitlines()) >= len(d.recorded()) - 1   # the serial host gets them all
    finally:
        d.stop()
        kb.close()
        ser.close()
    assert "line dropped" in d.log and "Traceback" not in d.log


def test_doctor_names_a_missing_keyboard_device(tmp_path):
    conf = config(tmp_path, tmp_path / "state", extra='[output.keyboard]\nenabled = true\n')
    out = cli("doctor", "-c", str(conf))
    line = next(x for x in out.stdout.splitlines() if x.startswith("FIX  keyboard"))
    assert "/dev/hidg0 missing" in line and "--usb-gadget" in line


def test_output_test_types_a_probe_line(tmp_path):
    host = Host(tmp_path / "ttyGS0")
    conf = config(tmp_path, tmp_path / "state", extra=f'[output.serial]\nenabled = true\ndevice = "{tmp_path / "ttyGS0"}"\n')
    try:
        out = cli("output", "test", "-c", str(conf))
        time.sleep(0.2)
    finally:
        host.close()
    assert out.returncode == 0, out.stderr
    assert host.data.decode() == "scanner-agent test: aa dd ee af a1 0123456789\n"
    none = cli("output", "test", "-c", str(config(tmp_path, tmp_path / "state")))
    assert none.returncode == 2 and "no output enabled" in none.stderr


def test_output_test_failures_speak_of_the_probe_line_not_a_check_in(tmp_path):
    """No host reads the port: what was dropped is the probe line, not a check-in in the outbox."""
    os.mkfifo(tmp_path / "ttyGS0")                                  # nobody on the other end
    conf = config(tmp_path, tmp_path / "state", extra=f'[output.serial]\nenabled = true\ndevice = "{tmp_path / "ttyGS0"}"\n'
                                                       'timeout_s = 0.3\n')
    out = cli("output", "test", "-c", str(conf))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "probe line" in out.stderr and "outbox" not in out.stderr and "check-in is" not in out.stderr, out.stderr


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


# --- issue 32 item 8: what a keyboard cannot type, and lines dropped --------------------------------

#: a BHYT code the card reader accepts green with a Vietnamese letter in an opaque field (the check
#: string is kept exactly, never judged)
ODD_BHYT = BHYT15.replace("0123456789abcdef-7102", "0123456789abcdeễ-7102")


def qr_frame(text: str) -> "np.ndarray":
    import numpy as np
    import zxingcpp

    img = np.array(zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
                   .to_image(scale=6, add_quiet_zones=True))
    canvas = np.full((720, 1280), 128, np.uint8)
    canvas[40:40 + img.shape[0], 300:300 + img.shape[1]] = img
    return canvas


def keyboard_station(tmp_path: Path, device: Path):
    from agent.feedback import Feedback, NoOutput
    from agent.station import Station
    from support.daemon import replay_config

    cfg = replay_config(tmp_path / "state")
    cfg.keyboard.enabled, cfg.keyboard.device, cfg.keyboard.timeout_s = True, str(device), 2.0
    station = Station(cfg, feedback=Feedback(NoOutput()))
    for out in station.outputs:
        out.writer.start()
    return station


def typed(host: Host) -> str:
    return hid.decode([bytes(host.data[i:i + 8]) for i in range(0, len(host.data), 8)])


def test_a_letter_the_keyboard_cannot_type_is_left_out_and_shown_until_it_is_acknowledged(tmp_path):
    """A BHYT code with a non-ASCII letter in an opaque field is checked in green, but `{raw}{enter}`
    was dropped whole: the HIS got nothing, and the warning cleared with the next good line. Now the
    letter is left out, the rest typed (the template's one Enter, no key of the card's), and a fault
    names what was left out until IT acknowledges it, across a restart. Real QR frames through the
    real decoder, card reader and outbox; the keyboard is a FIFO read as the PC would."""
    from agent.capture import Frame
    from agent.feedback import Signal
    from agent.sim.demo import BHYT10

    host = Host(tmp_path / "hidg0")
    station = keyboard_station(tmp_path, tmp_path / "hidg0")
    try:
        assert [d.action for d in station.step(Frame(qr_frame(ODD_BHYT), 0.0))] == ["checkin"]
        assert station.feedback.history[-1][1] == Signal.CHECKIN and station.outbox.depth() == 1   # green
        want = ODD_BHYT.replace("ễ", "") + "\n"
        assert wait_for(lambda: typed(host) == want, 10), typed(host)
        faults = [f for f in station.fault_items() if f.code == "output_keyboard"]
        assert len(faults) == 1 and "1 line(s) typed without 'ễ' U+1EC5" in faults[0].text, faults
        assert "scanner-agent output ack" in faults[0].text and len(faults[0].text) <= 400
        assert station.fault_items(leds=True) == []              # IT's, like the output's other faults

        assert [d.action for d in station.step(Frame(qr_frame(BHYT10), 1.0))] == ["checkin"]
        assert wait_for(lambda: typed(host) == want + BHYT10 + "\n", 10), typed(host)
        time.sleep(0.1)
        assert [f.text for f in station.fault_items() if f.code == "output_keyboard"] == [faults[0].text]
    finally:
        station.shutdown()

    again = keyboard_station(tmp_path, tmp_path / "hidg0")      # restarted (the PC powered the Pi off)
    try:
        assert [f.text for f in again.fault_items() if f.code == "output_keyboard"] == [faults[0].text]
        import json
        assert json.loads(again.acknowledge_outputs()) == [faults[0].text]
        assert [f for f in again.fault_items() if f.code == "output_keyboard"] == []
        assert json.loads(again.acknowledge_outputs()) == []
    finally:
        again.shutdown()
        host.close()
    from agent import paths
    assert not paths.output_record(tmp_path / "state", "keyboard").exists()


def test_a_dropped_line_stays_a_fault_after_the_host_reads_again(tmp_path):
    """No host reading: the line is dropped (the check-in is in the outbox). The device's fault
    clears when the host reads again, the dropped line's stays until IT acknowledges it."""
    from agent.config import Config
    from agent.outputs.devices import make_outputs

    cfg = Config()
    cfg.station.state_dir = str(tmp_path)
    cfg.keyboard.enabled, cfg.keyboard.device, cfg.keyboard.timeout_s = True, str(tmp_path / "hidg0"), 0.3
    writer = make_outputs(cfg)[0].writer.start()
    try:
        writer.send("7901234567\n")                              # no device: dropped
        assert wait_for(lambda: writer.dropped == 1, 10) and "hidg0" in writer.warning
        host = Host(tmp_path / "hidg0")                           # the PC reads again
        writer.send("7901234568\n")
        assert wait_for(lambda: writer.sent == 1, 10) and writer.warning is None
        assert wait_for(lambda: typed(host) == "7901234568\n", 10)
        host.close()
        lost = writer.unacknowledged
        assert lost and "1 line(s) not typed (last: " in lost and "hidg0" in lost, lost
        assert writer.acknowledge() == lost and writer.unacknowledged is None
    finally:
        writer.stop()
    probe = make_outputs(cfg, records=False)[0].writer                # `output test`'s probe: nothing kept
    assert probe.record_path is None


def test_output_ack_with_the_daemon_stopped_clears_what_status_shows(tmp_path):
    from agent.outputs import record

    conf = config(tmp_path, tmp_path / "state")
    (tmp_path / "state").mkdir()
    lost = record.Lost()
    lost.add_short("ễ", time.time())
    record.save(tmp_path / "state" / "output-keyboard.unacknowledged.json", lost)
    status = cli("status", "-c", str(conf))
    assert status.returncode == 2 and "FAULT        keyboard output since" in status.stdout, status.stdout
    acked = cli("output", "ack", "-c", str(conf))
    assert acked.returncode == 0 and acked.stdout.startswith("acknowledged: keyboard output since"), acked
    assert "keyboard output" not in cli("status", "-c", str(conf)).stdout
    again = cli("output", "ack", "-c", str(conf))
    assert again.returncode == 0 and "nothing to acknowledge" in again.stdout


@pytest.mark.slow   # the real daemon
def test_output_ack_through_the_running_daemon(tmp_path):
    """The daemon types the card without the letter, status shows the fault (exit 2), `output ack`
    clears it through the control socket, and it stays cleared."""
    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "000.png"), qr_frame(ODD_BHYT))
    conf = config(tmp_path, tmp_path / "state", extra=f'[output.keyboard]\nenabled = true\ndevice = "{tmp_path / "hidg0"}"\n')
    conf.write_text(conf.read_text().replace(f'path = "{ROOT / "agent/samples/frames"}"', f'path = "{frames}"')
                    .replace("cooldown_s = 0", "cooldown_s = 600"))               # one patient, held there
    host = Host(tmp_path / "hidg0")
    d = Daemon(conf)
    try:
        assert d.wait_for(lambda: any("typed without 'ễ'" in f for f in d.status()["faults"]), 60), d.log[-2000:]
        assert typed(host) == ODD_BHYT.replace("ễ", "") + "\n"              # one check-in, typed once
        acked = cli("output", "ack", "-c", str(conf))
        assert acked.returncode == 0 and "acknowledged: keyboard output since" in acked.stdout, acked
        assert d.wait_for(lambda: not any("keyboard output" in f for f in d.status()["faults"]), 10)
        time.sleep(1)
        assert not any("keyboard output" in f for f in d.status()["faults"])
        assert "nothing to acknowledge" in cli("output", "ack", "-c", str(conf)).stdout
    finally:
        d.stop()
        host.close()
    assert "Traceback" not in d.log and "left out" in d.log


def test_the_record_of_an_output_since_disabled_still_shows_until_acknowledged(tmp_path):
    """IT turning the serial output off does not hide the lines it dropped before."""
    from agent import paths
    from agent.feedback import Feedback, NoOutput
    from agent.outputs import record
    from agent.station import Station
    from support.daemon import replay_config

    (tmp_path / "state").mkdir()
    lost = record.Lost()
    lost.add_dropped("no host reading /dev/ttyGS0 for 5 s", time.time())
    record.save(paths.output_record(tmp_path / "state", "serial"), lost)
    station = Station(replay_config(tmp_path / "state"), feedback=Feedback(NoOutput()))
    try:
        assert station.outputs == []
        assert [f.code for f in station.fault_items()] == ["output_serial"]
        assert "1 line(s) not sent" in station.fault_items()[0].text
        import json
        assert len(json.loads(station.acknowledge_outputs())) == 1 and station.fault_items() == []
        assert not paths.output_record(tmp_path / "state", "serial").exists()
    finally:
        station.shutdown()
