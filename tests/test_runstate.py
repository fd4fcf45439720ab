"""The status file (agent.runstate.DaemonStatus) and its typed sections (agent.status_types): a
file written before the sections were typed reads back into them and is written again byte for
byte; a damaged or older file reads as defaults, never a traceback; `status --json` shows the
sections as the file has them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import paths, runstate
from agent.admin.status import collect
from agent.config import MqttConfig
from agent.runstate import DaemonStatus
from agent.status_types import (CameraStatus, ControlStatus, Counters, MqttStatus, OutboxStats, ViewStatus,
                                WorkerStatus, WriterStatus)
from support.daemon import replay_config, status_of

#: the status file of a replay daemon with a broker and a serial output, as the code before the
#: typed sections wrote it (`python -m agent run`, read from its runtime directory)
TODAY = (Path(__file__).parent / "support" / "status-file-0.1.0.json").read_bytes()

#: the sections of other stations, in the shapes the code before the typed sections wrote: a
#: webcam steering itself, a Pi camera, a receipt link, an outbox that cannot be read or was salvaged
V4L2_CAMERA = {"source": "v4l2", "fault": None, "frames": 30, "finished": False, "crop": [320, 180, 1280, 720],
               "exposure_us": 8000, "gain": 2.0, "control": "auto", "mode": "1920x1080 MJPG at 30 fps",
               "state": "following code; exposure: the webcam's own (no manual exposure)",
               "exposure_control": "refused: no manual exposure"}
PICAM_CAMERA = {"source": "picamera2", "fault": "camera: no frames for 5 s", "frames": 0, "finished": False,
                "crop": [1152, 648, 2304, 1296], "exposure_us": 12000, "gain": 1.5, "control": "auto",
                "mode": "4608x2592 at 14 fps", "state": "searching"}
FIXED_CAMERA = {"source": "picamera2", "fault": None, "frames": 5, "finished": True, "control": "fixed",
                "mode": "", "state": "fixed"}
RECEIPT_LINK = {"alive": False, "crashes": 2, "last_crash": "OSError: boom", "fault": "mqtt-link worker crashed",
                "connected": False, "last_error": "connection refused", "failed_attempts": 7,
                "connected_since": None, "failed_total": 3, "broker": "broker.example:8883",
                "delivered_on": "receipt", "awaiting_receipt": 4}
COUNTERS = {"frames": 10, "decoded": 4, "checkins": 2, "already_read": 1, "rejected": 1, "try_again": 3, "refused": 1,
            "last_checkin_at": 1795951212.5, "by_verdict": {"ok": 2, "expired": 1}, "guidance": {"glare": 2, "closer": 1},
            "last_guidance": [{"reason": "glare", "at": 1795951210.25}, {"reason": "closer", "at": 1795951211}],
            "by_flag": {"repeat_today": 1}}
OUTBOX_UNREADABLE = {"queue_depth": None, "oldest_undelivered_age_s": None, "last_checkin_at": None,
                     "error": "outbox: database disk image is malformed"}
OUTBOX_SALVAGED = {"queue_depth": 12, "oldest_undelivered_age_s": 3600.5, "delivered_total": 100, "failed_total": 1,
                   "last_checkin_at": 1795951212, "recovered_from": "/var/lib/scanner-agent/outbox.db.damaged-1",
                   "recovery": {"at": 1795951000.0, "file": "/x", "reason": "malformed", "saved": 12, "lost": None},
                   "damaged_files": ["/var/lib/scanner-agent/outbox.db.damaged-1"]}


def other_station(camera: dict, *, mqtt: dict | None, outbox: dict) -> bytes:
    data = json.loads(TODAY)
    data.update(camera=camera, mqtt=mqtt, counters=COUNTERS, outbox=outbox, faults=["camera: no frames for 5 s"])
    data["workers"] = {"capture": data["workers"]["capture"], **({"mqtt-link": mqtt} if mqtt else {})}
    return json.dumps(data).encode()


def round_trip(raw: bytes) -> bytes:
    return json.dumps(DaemonStatus.from_dict(json.loads(raw)).to_dict()).encode()


def test_a_status_file_written_before_the_typed_sections_is_written_again_byte_for_byte(tmp_path):
    assert round_trip(TODAY) == TODAY
    runstate.write(tmp_path / "status.json", DaemonStatus.from_dict(json.loads(TODAY)))
    assert (tmp_path / "status.json").read_bytes() == TODAY
    for camera, mqtt, outbox in ((V4L2_CAMERA, RECEIPT_LINK, OUTBOX_UNREADABLE), (PICAM_CAMERA, None, OUTBOX_SALVAGED),
                                 (FIXED_CAMERA, RECEIPT_LINK, OUTBOX_SALVAGED)):
        raw = other_station(camera, mqtt=mqtt, outbox=outbox)
        assert round_trip(raw) == raw


def test_each_section_reads_into_its_dataclass():
    s = DaemonStatus.from_dict(json.loads(TODAY))
    assert s.camera == CameraStatus("replay", frames=203)
    assert isinstance(s.mqtt, MqttStatus) and s.mqtt.connected and s.mqtt.delivered_on == "broker"
    assert type(s.workers["capture"]) is WorkerStatus and s.workers["capture"].alive
    assert s.workers["mqtt-link"] == s.mqtt                               # the link's worker is the link
    serial = s.workers["output-serial"]
    assert isinstance(serial, WriterStatus) and serial.dropped == 76 and serial.device_fault.endswith("directory")
    assert s.counters.checkins == 76 and s.counters.by_verdict["ok"] == 60
    assert isinstance(s.outbox, OutboxStats) and s.outbox.delivered_total == 76 and s.outbox.error is None

    other = DaemonStatus.from_dict(json.loads(other_station(V4L2_CAMERA, mqtt=RECEIPT_LINK, outbox=OUTBOX_UNREADABLE)))
    assert other.camera.view == ViewStatus([320, 180, 1280, 720], 8000, 2.0)
    assert other.camera.controls == ControlStatus("auto", "1920x1080 MJPG at 30 fps", V4L2_CAMERA["state"],
                                                  "refused: no manual exposure")
    assert other.mqtt.awaiting_receipt == 4 and other.counters.last_guidance[-1]["reason"] == "closer"
    assert other.outbox.error.startswith("outbox:") and other.outbox.queue_depth is None


GARBAGE = [None, [], "x", 3, True, {"nested": {"deep": [1, 2]}}, {"alive": "yes", "crop": [1, "a"], "control": 5}]


@pytest.mark.parametrize("junk", GARBAGE)
def test_a_damaged_section_reads_as_empty_never_a_traceback(junk):
    for section in ("camera", "mqtt", "workers", "counters", "outbox", "faults"):
        data = json.loads(TODAY)
        data[section] = junk
        s = DaemonStatus.from_dict(data)
        assert s is not None and s.pid == 28373
        json.dumps(s.to_dict())                                           # and it can be written again


@pytest.mark.parametrize("junk", [[], ["a"], True, {"nested": [1]}])
def test_a_damaged_field_reads_as_its_default(junk):
    data = json.loads(TODAY)
    data["workers"] = {"capture": junk, "mqtt-link": {**RECEIPT_LINK, "crashes": junk, "connected_since": junk}}
    data["counters"] = {**COUNTERS, "frames": junk, "by_verdict": {"ok": junk, "expired": 1}, "last_guidance": [junk, 3]}
    data["camera"] = {**V4L2_CAMERA, "crop": junk, "mode": junk, "frames": junk}
    data["outbox"] = {**OUTBOX_SALVAGED, "queue_depth": junk, "damaged_files": [junk, "/f"], "recovery": junk}
    s = DaemonStatus.from_dict(data)
    link = s.workers["mqtt-link"]
    assert isinstance(link, MqttStatus) and link.crashes == 0 and link.connected_since is None
    assert s.counters.frames == 0 and s.counters.by_verdict == {"expired": 1} and s.counters.last_guidance in ([], [junk])
    assert s.camera.view is None and s.camera.controls.mode == "" and s.camera.frames == 0
    assert s.outbox.damaged_files == ["/f"] and s.outbox.queue_depth is None


def test_a_missing_section_is_written_back_as_it_was_read():
    """An older or damaged file without a section: the reader sees None, the file shows {} (mqtt: null)."""
    s = DaemonStatus.from_dict({"pid": 1, "updated_at": 2.0})
    assert (s.camera, s.mqtt, s.counters, s.outbox, s.workers) == (None, None, None, None, {})
    assert s.to_dict() == {"pid": 1, "version": "?", "station": "?", "started_at": 0.0, "updated_at": 2.0,
                           "camera": {}, "mqtt": None, "clock_synced": False, "faults": [], "workers": {},
                           "counters": {}, "outbox": {}, "stale_s": None}


def test_status_json_shows_the_sections_as_the_file_has_them(tmp_path, daemon_like):
    cfg = replay_config(tmp_path / "state")
    cfg.mqtt = MqttConfig(host="127.0.0.1")
    for raw in (TODAY, other_station(V4L2_CAMERA, mqtt=RECEIPT_LINK, outbox=OUTBOX_UNREADABLE)):
        file = paths.status_file(cfg.station.state_dir)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(raw.replace(b'"pid": 28373', b'"pid": %d' % daemon_like))
        shown, written = collect(cfg), json.loads(raw)
        assert shown["daemon"] == "running"
        for section in ("camera", "mqtt", "counters", "workers"):
            assert json.dumps(shown[section]) == json.dumps(written[section])


def test_the_station_writes_every_section_in_the_file_s_order(tmp_path):
    """What the station builds today has the keys, in the order, of the file written before."""
    from agent.feedback import Feedback, NoOutput
    from agent.station import Station

    station = Station(replay_config(tmp_path / "state"), feedback=Feedback(NoOutput()))
    try:
        data, before = station.status().to_dict(), json.loads(TODAY)
        assert list(data) == list(before)
        assert list(data["camera"]) == list(before["camera"])
        assert list(data["counters"]) == list(before["counters"]) and list(data["outbox"]) == list(before["outbox"])
        assert data["mqtt"] is None                                       # no broker configured
        assert list(data["workers"]["feedback"]) == list(before["workers"]["feedback"])
        assert json.dumps(data).encode() == round_trip(json.dumps(data).encode())
        assert isinstance(station.counters, Counters)
    finally:
        station.shutdown()


def test_status_text_reads_every_section():
    """`scanner-agent status` for people: each section read back into its dataclass (the lines
    as the code before the typed sections wrote them)."""
    from agent.admin.status import render

    report = {"station": "counter-02", "version": "0.1.0", "service": "active", "daemon": "running",
              "status_stale_s": None, "clock_synced": True, "disk_free_mb": 100, "faults": [],
              "camera": V4L2_CAMERA, "mqtt": RECEIPT_LINK, "outbox": OUTBOX_SALVAGED, "counters": COUNTERS}
    lines = render(report).splitlines()
    assert lines[2] == ("camera       v4l2 ok; crop 1280x720+320+180, exposure 8000 us, gain 2.0 (auto: following code;"
                        " exposure: the webcam's own (no manual exposure))")
    assert lines[3] == "broker       broker.example:8883 DISCONNECTED: connection refused; 4 awaiting the hospital's receipt"
    assert lines[4] == "queue        12 undelivered; oldest 1.0 h"
    assert lines[8].startswith("recovered    damaged outbox at ") and lines[8].endswith(": 12 salvaged, unknown lost")
    assert lines[9] == "try again    last reasons (newest last): glare, closer"
    assert lines[-1] == "check        WARNING: broker disconnected"
    stopped = {**report, "daemon": "stopped", "camera": {"source": "replay", "fault": None}, "mqtt": None,
               "outbox": OUTBOX_UNREADABLE, "counters": None}
    lines = render(stopped).splitlines()
    assert lines[2:5] == ["camera       replay", "broker       unknown (daemon stopped)",
                          "queue        None undelivered; oldest - (outbox: database disk image is malformed)"]


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
