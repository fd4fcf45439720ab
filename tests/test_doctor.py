"""`scanner-agent doctor` (agent/admin/doctor.py) against real brokers: the guide's sample
broker passes, a wrong ACL and a refused login are named with what to fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.broker import SampleBroker
from support.daemon import cli

STATION = "counter-01"


def doctor_lines(conf: Path) -> tuple[dict[str, str], subprocess.CompletedProcess]:
    out = cli("doctor", "-c", str(conf))
    return {line.split()[1]: line for line in out.stdout.splitlines() if line[:4] in ("ok  ", "FIX ")}, out


@pytest.mark.slow   # real daemons, real brokers
def test_doctor_on_the_sample_broker_and_under_a_wrong_acl(tmp_path):
    """doctor passes on the guide's sample broker (TLS listener, password file, ACL with %u
    patterns; tests/test_consumer.py runs a station and the reference consumer through it), and
    names the refused publish under an ACL that does not fit (the station would be invisible), and
    a refused login."""
    broker = SampleBroker(tmp_path / "sample", ["counter-01"])
    try:
        conf = broker.station_config(tmp_path / "st", STATION, broker.passwords["counter-01"],
                                     'delivered_on = "receipt"')
        lines, out = doctor_lines(conf)
        assert lines["tls"].startswith("ok") and lines["mqtt"].startswith("ok"), out.stdout
        assert lines["acl"].startswith("ok"), out.stdout
    finally:
        broker.stop()

    wrong = SampleBroker(tmp_path / "wrong", ["counter-01"], acl="user counter-01\ntopic readwrite hospital/other/#\n")
    try:
        conf = wrong.station_config(tmp_path / "st2", STATION, wrong.passwords["counter-01"], 'delivered_on = "receipt"')
        lines, out = doctor_lines(conf)
        bad_pw = wrong.station_config(tmp_path / "st3", STATION, "not-the-password")
        pw_lines, _ = doctor_lines(bad_pw)
    finally:
        wrong.stop()
    assert lines["mqtt"].startswith("ok") and lines["acl"].startswith("FIX"), out.stdout
    assert "publish hospital/checkin/counter-01/health: Not authorized" in lines["acl"], lines["acl"]
    # (Mosquitto 2.0 grants a subscription its ACL denies and then delivers nothing, so the
    # refusal doctor can prove there is the publish; brokers that refuse in the SUBACK are named too.)
    assert out.returncode != 0
    assert "the broker refused the login" in pw_lines["mqtt"], pw_lines


# --- issue 32 item 10 -----------------------------------------------------------------------------

def test_doctor_finds_the_unit_in_every_folder_systemd_reads(tmp_path, monkeypatch):
    """doctor looked for the unit in /etc/systemd/system only: on a Debian package install (its unit
    in /lib/systemd/system) it said to run systemd/install.sh, whose copy in /etc would then hide
    the package's unit from every upgrade. Now any of systemd's unit folders; masked is a fix,
    install.sh's copy over the package's a warning, and a missing unit's fix fits the install."""
    from agent import paths
    from agent.admin import doctor

    etc, lib = tmp_path / "etc/systemd/system", tmp_path / "lib/systemd/system"
    etc.mkdir(parents=True)
    lib.mkdir(parents=True)
    listed = tmp_path / "var/lib/dpkg/info/scanner-agent.list"
    monkeypatch.setattr(paths, "UNIT", etc / "scanner-agent.service")
    monkeypatch.setattr(paths, "UNIT_DIRS", (etc, tmp_path / "run/systemd/system", lib), raising=False)
    monkeypatch.setattr(paths, "PACKAGE_LIST", listed, raising=False)
    unit = (Path(__file__).resolve().parents[1] / "systemd/scanner-agent.service").read_text()

    listed.parent.mkdir(parents=True)
    listed.write_text("/lib/systemd/system/scanner-agent.service\n")
    (lib / "scanner-agent.service").write_text(unit)                   # the package's, as dpkg installs it
    check = doctor.check_unit()
    assert check.ok and not check.warning and check.detail == str(lib / "scanner-agent.service"), check
    assert "install.sh" not in check.line()

    (etc / "scanner-agent.service").write_text(unit)                    # install.sh run on top of it
    check = doctor.check_unit()
    assert check.ok and check.warning and f"sudo rm {etc / 'scanner-agent.service'}" in check.detail, check

    (etc / "scanner-agent.service").unlink()
    (etc / "scanner-agent.service").symlink_to("/dev/null")             # masked (what removing the package leaves)
    check = doctor.check_unit()
    assert not check.ok and "masked" in check.detail and "systemctl unmask scanner-agent" in check.fix, check

    (etc / "scanner-agent.service").unlink()
    (lib / "scanner-agent.service").unlink()
    check = doctor.check_unit()                                          # gone, package installed
    assert not check.ok and "apt install --reinstall scanner-agent" in check.fix and "install.sh" not in check.fix
    listed.unlink()
    check = doctor.check_unit()                                          # gone, no package: a source install
    assert not check.ok and "sudo systemd/install.sh" in check.fix, check


def test_doctor_advertises_a_maximum_packet_size_and_never_reads_an_oversized_retained_verdict(
        tmp_path, broker, monkeypatch):
    """doctor subscribes to the station's verdict (and receipt) topic without MQTT 5 Maximum Packet
    Size: a retained 80 MB verdict took it from 72 to 304 MB resident, on the Pi beside the station.
    It now advertises the station's bound: a 2 MB retained verdict never reaches it, a small
    retained receipt does (the subscription works), and the checks still pass."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from agent.admin.doctor import check_session
    from agent.config import Config
    from agent.mqtt import session
    from support.broker import link_config

    hospital = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hospital", protocol=MQTTProtocolVersion.MQTTv5)
    hospital.connect("127.0.0.1", broker.port)
    hospital.loop_start()
    try:
        hospital.publish(f"hospital/checkin/{STATION}/verdict", b"[" * 2_000_000, qos=1, retain=True).wait_for_publish(10)
        hospital.publish(f"hospital/checkin/{STATION}/receipt", b"small", qos=1, retain=True).wait_for_publish(10)
    finally:
        hospital.loop_stop()
        hospital.disconnect()

    seen: list[int] = []
    make = session.make_client

    def watched(*args, **kw):                       # doctor's own client, with an ear on what it receives
        client = make(*args, **kw)
        client.on_message = lambda c, u, msg: seen.append(len(msg.payload))
        return client
    monkeypatch.setattr(session, "make_client", watched)
    cfg = Config()
    cfg.station.id, cfg.station.state_dir = STATION, str(tmp_path / "state")
    cfg.mqtt = link_config(broker.port, delivered_on="receipt")
    checks = check_session(cfg, timeout=5)
    assert [c.ok for c in checks] == [True, True], checks
    assert seen == [len(b"small")], seen[:3]


@pytest.mark.parametrize("camera", ['source = "v4l2"\ndevice = 999', 'source = "replay"\npath = "EMPTY"'])
def test_snapshot_without_a_usable_camera_is_one_line_not_a_traceback(tmp_path, camera):
    """`snapshot` with the daemon stopped and no usable camera (none at /dev/video999, a replay
    folder without images) printed a SourceError traceback."""
    (tmp_path / "empty").mkdir()
    camera = camera.replace("EMPTY", str(tmp_path / "empty"))
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[camera]\n{camera}\n[feedback]\nbackend = "none"\n')
    out = cli("snapshot", "-c", str(conf), str(tmp_path / "view.jpg"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("scanner-agent snapshot: ")]
    assert len(said) == 1 and "camera (" in said[0] and "doctor" in said[0], out.stderr
    assert not (tmp_path / "view.jpg").exists()
