"""The hospital side without a single point of failure (issue 34): two reference consumers on a
shared subscription, a second site's Mosquitto bridged to the hub with examples/mosquitto/bridge.conf.
Real Mosquitto brokers from the guide's samples (TLS, passwords, ACL), real PostgreSQL, the real
consumer (in-process here, as processes SIGKILLed in the load run of bench/hospital.py)."""

from __future__ import annotations

import json
import random
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.cards import read_card
from agent.event import checkin_body, envelope
from agent.mqtt.session import connect_properties
from agent.sim.payloads import bhyt
from examples.consumer.consumer import Consumer
from support.broker import SampleBroker, Subscriber
from support.postgres import Postgres

pytestmark = pytest.mark.slow   # brokers, PostgreSQL, a bridge
PREFIX = "hospital/checkin"


class Station:
    """A station's MQTT side as the station has it (MQTT 5, a kept session, its own receipt and
    verdict topics), on the broker of its site."""

    def __init__(self, broker: SampleBroker, station: str):
        self.station, self.got = station, {"receipt": [], "verdict": []}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=station, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.tls_set(ca_certs=str(broker.ca["ca"]))
        self.client.username_pw_set(station, broker.passwords[station])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(f"{PREFIX}/{station}/receipt", 1), (f"{PREFIX}/{station}/verdict", 1)])
        self.client.on_message = lambda c, u, m: self.got[m.topic.rsplit("/", 1)[1]].append(json.loads(m.payload))
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=connect_properties())
        self.client.loop_start()
        assert Subscriber.wait_for(self.client.is_connected, 10)

    def send(self, seq: int) -> str:
        event = envelope(checkin_body(read_card(bhyt(random.Random(seq))), synced=True), event_id=str(uuid.uuid4()),
                         seq=seq, station=self.station)
        self.client.publish(f"{PREFIX}/{self.station}/checkin", json.dumps(event), qos=1).wait_for_publish(5)
        return event["id"]

    def ids(self, kind: str) -> list[str]:
        return [i for m in self.got[kind] for i in (m["ids"] if kind == "receipt" else [m["id"]])]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_answers_published_while_the_bridge_is_down_reach_the_second_site(tmp_path):
    """A check-in of a station at the second site crosses the bridge; the link goes down (the site
    broker stops) before the consumer stores it. The consumer's receipt and verdict, published on
    the hub meanwhile, wait in the bridge's session there and reach the station once the link is
    back. With `bridge_protocol_version mqttv50` they are lost: Mosquitto 2.0's v5 bridge sends no
    session expiry, so the hub ends the bridge's session at the disconnect."""
    hub = SampleBroker(tmp_path / "hub", ["bridge-site2"])
    site = SampleBroker(tmp_path / "site", ["site-01"], extra=hub.bridge_config())
    pg = Postgres(tmp_path / "pg").start()
    auth = dict(tls_ca=str(hub.ca["ca"]), username="hospital", password=hub.passwords["hospital"])
    consumer = Consumer("127.0.0.1", hub.port, pg.dsn, name="c1", **auth).start()
    watch = Subscriber(hub.port, f"{PREFIX}/+/checkin", client_id="hospital-watch", tls_ca=hub.ca["ca"],
                       auth=("hospital", hub.passwords["hospital"]))
    station = Station(site, "site-01")
    try:
        assert consumer.subscribed.wait(10)
        first = station.send(1)
        assert Subscriber.wait_for(lambda: station.ids("receipt") == [first] and station.ids("verdict") == [first],
                                   15), station.got      # up and down the bridge, through both ACLs
        consumer.stop()
        second = station.send(2)
        assert Subscriber.wait_for(lambda: len(watch.json_on("/checkin")) == 2, 10)   # on the hub now
        station.close()
        site.stop()                                                                    # the link is down
        consumer = Consumer("127.0.0.1", hub.port, pg.dsn, name="c1", **auth).start()
        assert Subscriber.wait_for(lambda: consumer.stored == 1, 15)                  # receipt, verdict sent
        site.start()
        station = Station(site, "site-01")
        assert Subscriber.wait_for(lambda: second in station.ids("receipt") and second in station.ids("verdict"),
                                   20), station.got
        with psycopg.connect(pg.dsn) as conn:
            assert sorted(r[0] for r in conn.execute("SELECT id::text FROM checkins")) == sorted([first, second])
    finally:
        station.close()
        watch.close()
        consumer.stop()
        site.stop()
        hub.stop()
        pg.stop()


def test_every_check_in_stored_once_and_answered_through_a_consumer_kill_and_a_hub_restart(tmp_path):
    """bench/hospital.py scaled down: 50 stations (half at the bridged site), 20 s at 10 check-ins
    a second, consumer c1 SIGKILLed at 6 s and started 3 s later, the hub restarted at 12 s. Every
    check-in stored exactly once, none a dead letter, every one receipted, every one stored within
    the verdict age answered with a verdict. The stations resend after 10 s without a receipt (as
    in receipt mode): a check-in the brokers dropped is still stored, but must not be lost."""
    from bench.hospital import Plan, run

    r = run(Plan(stations=50, rate=10, duration=20, kill=0.3, down=3, restart=0.6, receipt_timeout=10,
                 drain=120, folder=tmp_path / "run"))
    assert r["problems"] == [], (r["problems"], r["events"])
    assert r["sent"] == r["stored"] == r["rows"] == r["receipted"] == 200
    assert r["verdicts_due"] > 0 and r["verdicts"] >= r["verdicts_due"]
    assert any("SIGKILLed" in e for e in r["events"]) and any("hub started again" in e for e in r["events"])


@pytest.mark.parametrize("leave", [True, False])
def test_an_instance_stopped_hands_its_share_to_the_other(tmp_path, broker, leave):
    """Mosquitto gives a shared subscription's messages to every member with a session, connected
    or not: an instance stopped with its session kept holds every other check-in until it comes
    back (leave=False, the default: nothing lost, half delayed). With --leave-on-stop it
    unsubscribes, stores what it holds and ends its session: the other stores every check-in."""
    pg = Postgres(tmp_path / "pg").start()
    c1 = Consumer("127.0.0.1", broker.port, pg.dsn, name="c1").start()
    c2 = Consumer("127.0.0.1", broker.port, pg.dsn, name="c2", leave_on_stop=leave).start()
    pub = Subscriber(broker.port, "nothing/#", client_id="hub-07")
    try:
        assert c1.subscribed.wait(5) and c2.subscribed.wait(5)
        c2.stop()
        for n in range(20):
            e = envelope(checkin_body(read_card(bhyt(random.Random(n))), synced=True), event_id=str(uuid.uuid4()),
                         seq=n + 1, station="hub-07")
            pub.client.publish(f"{PREFIX}/hub-07/checkin", json.dumps(e), qos=1).wait_for_publish(5)

        def stored() -> int:
            with psycopg.connect(pg.dsn) as conn:
                return conn.execute("SELECT count(*) FROM checkins").fetchone()[0]
        if leave:
            assert Subscriber.wait_for(lambda: stored() == 20, 10), stored()
        else:
            assert Subscriber.wait_for(lambda: stored() == 10, 10), stored()
            assert not Subscriber.wait_for(lambda: stored() > 10, 2)          # the rest wait for c2
            c2 = Consumer("127.0.0.1", broker.port, pg.dsn, name="c2").start()
            assert Subscriber.wait_for(lambda: stored() == 20, 10), stored()
    finally:
        pub.close()
        c1.stop()
        c2.stop()
        pg.stop()
