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
