"""The broker set up as docs/integrating.md says, on stock Debian 12 / Raspberry Pi OS Mosquitto:
Debian's own main mosquitto.conf, the guide's snippet in conf.d, the password file and the
certificates from the guide's scripts with their ownership, the broker started as root and
dropping to 'mosquitto'. Then a station's doctor passes against it and a check-in lands.

Also: the sample broker (examples/mosquitto) refuses oversized messages."""

from __future__ import annotations

import grp
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
import pytest

from support.broker import DebianBroker, SampleBroker, Subscriber
from support.daemon import Daemon, cli, config

STATION = "counter-01"
PREFIX = "hospital/checkin"
wait_for = Subscriber.wait_for


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


def test_the_sample_broker_refuses_oversized_messages(tmp_path):
    """examples/mosquitto/mosquitto.conf sets message_size_limit and max_packet_size: a 100 kB
    'check-in' is refused and never reaches the hospital's consumer; a small one still does."""
    broker = SampleBroker(tmp_path / "sample", ["counter-23"])

    def login(user: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}", protocol=MQTTProtocolVersion.MQTTv5)
        c.tls_set(ca_certs=str(broker.ca["ca"]))
        c.username_pw_set(user, broker.passwords[user])
        c.connect("localhost", broker.port)
        c.loop_start()
        assert wait_for(c.is_connected, 10)
        return c

    got: list[bytes] = []
    hospital = login("hospital")
    hospital.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    hospital.subscribe(f"{PREFIX}/+/checkin", qos=1)
    station = login("counter-23")
    try:
        time.sleep(0.5)
        station.publish(f"{PREFIX}/counter-23/checkin", b"x" * 100_000, qos=1)
        station.publish(f"{PREFIX}/counter-23/checkin", b"{}", qos=1)
        assert wait_for(lambda: got, 10)
        time.sleep(1)
        assert set(got) == {b"{}"}, [g[:20] for g in got]     # the small one, never the large one
    finally:
        for c in (station, hospital):
            c.loop_stop()
            c.disconnect()
        broker.stop()
