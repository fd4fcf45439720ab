"""The broker set up as docs/integrating.md says, on stock Debian 12 / Raspberry Pi OS Mosquitto:
Debian's own main mosquitto.conf, the guide's snippet in conf.d, the password file and the
certificates from the guide's scripts with their ownership, the broker started as root and
dropping to 'mosquitto'. Then a station's doctor passes against it and a check-in lands."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from support.broker import DebianBroker, Subscriber
from support.daemon import Daemon, cli, config

STATION = "counter-01"


@pytest.mark.slow   # a real broker, a real daemon, certificates made with openssl
def test_the_guides_broker_setup_works_on_stock_debian_mosquitto(tmp_path):
    broker = DebianBroker([STATION], host="127.0.0.1")
    sub = None
    try:
        assert broker.user() == "mosquitto"          # root dropped, as on a real install
        key = broker.ca.parent / "127.0.0.1.key"
        passwd = broker.conf.parent / "scanner-agent.passwd"
        for path in (key, passwd):
            st = path.stat()
            assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o777) == (0, "mosquitto", 0o640), path
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        conf = config(tmp_path, state, station=STATION)
        conf.write_text(conf.read_text() + f"""
[mqtt]
host = "127.0.0.1"
port = {broker.port}
ca_file = "{broker.ca}"
username = "{STATION}"
password = "{broker.passwords[STATION]}"
health_interval_s = 1
""")
        doctor = cli("doctor", "-c", str(conf))
        lines = {line.split()[1]: line for line in doctor.stdout.splitlines() if line[:4] in ("ok  ", "FIX ")}
        for name in ("config", "state", "outbox", "broker", "tls", "mqtt", "acl"):
            if name in lines:
                assert lines[name].startswith("ok"), doctor.stdout
        assert {"broker", "tls", "mqtt", "acl"} <= lines.keys(), doctor.stdout
        assert "TLSv1" in lines["tls"] and "certificate verified" in lines["tls"]

        sub = Subscriber(broker.port, "hospital/checkin/+/checkin", client_id="hospital-test", tls_ca=broker.ca,
                         auth=("hospital", broker.passwords["hospital"]))
        assert sub.subscribed
        daemon = Daemon(conf)
        try:
            assert Subscriber.wait_for(lambda: len(sub.json_on("/checkin")) >= 1, 60), daemon.log[-2000:]
        finally:
            daemon.stop()
        event = sub.json_on("/checkin")[0]
        assert event["station"] == STATION and event["kind"] in ("bhyt", "cccd")
    finally:
        if sub:
            sub.close()
        broker.stop()
