"""The link's conversation with the hospital through a real Mosquitto (agent/mqtt/link.py with
the rules of agent/mqtt/delivery.py): receipts that survive a broker dropping messages,
verdict rules, forged receipts, a flood of ignored replies, the maximum packet size, and
`queue retry` on a running station. tests/test_delivery.py drives the same rules without
a broker."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

from agent.admin.queue import retry
from agent.cards import read_card
from agent.config import MqttConfig
from agent.event import checkin_body
from agent.mqtt.link import MqttLink
from agent.mqtt.schemas import errors as schema_errors
from agent.outbox import Outbox
from agent.sim.payloads import bhyt, cccd
from support.broker import Broker, Subscriber
from support.broker import link_config as cfg

PREFIX = "hospital/checkin"
STATION = "counter-01"
wait_for = Subscriber.wait_for


def body(rng: random.Random) -> dict:
    return checkin_body(read_card(bhyt(rng) if rng.random() < 0.7 else cccd(rng)))


def client(port: int, client_id: str, *, session: bool = False) -> mqtt.Client:
    """A plain MQTT 5 client playing the hospital; `session`: a persistent one (clean start off)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if session else 0
    c.connect("127.0.0.1", port, clean_start=not session, properties=props)
    c.loop_start()
    assert wait_for(c.is_connected, 5)
    return c


class ReceiptingConsumer:
    """The hospital's consumer reduced to its contract: a persistent session on every station's
    check-ins, a receipt for each one it 'stores' (duplicates included)."""

    def __init__(self, port: int, receipts: bool = True):
        self.stored: list[str] = []
        self.receipts = receipts
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hospital-test",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/+/checkin", qos=1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.port = port

    def up(self) -> "ReceiptingConsumer":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.subscribed.clear()
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)   # the subscription is in place
        return self

    def down(self) -> None:
        self.client.disconnect()   # the session (and its subscription) stays on the broker
        self.client.loop_stop()

    def _on_message(self, c, u, msg) -> None:
        event = json.loads(msg.payload)
        self.stored.append(event["id"])
        if self.receipts:
            c.publish(msg.topic.rsplit("/", 1)[0] + "/receipt", json.dumps({"ids": [event["id"]]}), qos=1)


@pytest.mark.parametrize("mode", ["broker", "receipt"])
def test_a_consumer_down_longer_than_the_broker_queue(tmp_path, mode):
    """The broker keeps 20 messages for a consumer that is away; 60 check-ins are sent meanwhile.
    'broker' mode shows the loss the issue found (the station counts all 60 delivered); 'receipt'
    mode loses nothing: what the broker dropped is sent again until the consumer confirms it."""
    broker = Broker(tmp_path / "broker", max_queued=20).start()
    box = Outbox(tmp_path / "outbox.db", station=STATION)
    consumer = ReceiptingConsumer(broker.port).up()
    consumer.down()
    rng = random.Random(17)
    ids = [box.put(body(rng)).id for _ in range(60)]
    link = MqttLink(cfg(broker.port, delivered_on=mode, receipt_timeout_s=1), STATION, box, backoff=(0.05, 0.5))
    link.start()
    try:
        if mode == "broker":
            assert wait_for(lambda: box.depth() == 0, 15), "all 60 counted delivered on the broker's PUBACK"
            consumer.up()
            time.sleep(2)
            got = set(consumer.stored)
            assert len(got) <= 25 and set(ids) - got, f"the broker dropped none ({len(got)} of 60 arrived)"
            return
        time.sleep(3)   # several receipt timeouts pass while the consumer is away
        assert box.depth() == 60, "nothing may count as delivered without the hospital's receipt"
        # a sample while check-ins await their receipt (right after a timeout they are forgotten and
        # sent again, so one fixed instant may find none), the same in health and `scanner-agent status`
        samples: list[dict] = []

        def awaiting() -> bool:
            samples.append(health := link.health())
            return health["awaiting_receipt"] > 0 and link.status().awaiting_receipt == health["awaiting_receipt"]
        assert wait_for(awaiting, 30), samples[-3:]
        health = samples[-1]
        assert health["delivered_on"] == "receipt" and health["oldest_awaiting_receipt_s"] > 0
        assert schema_errors("health", health) == []
        consumer.up()
        assert wait_for(lambda: box.depth() == 0, 45), f"{box.depth()} still awaiting a receipt"
        assert set(consumer.stored) == set(ids), "every check-in reached the consumer"
        assert link.health()["awaiting_receipt"] == 0
        assert "dropped" in (tmp_path / "broker" / "mosquitto.log").read_text().lower() or \
            len(consumer.stored) > 60, "the scenario must make the broker drop or repeat messages"
    finally:
        link.stop()
        consumer.down()
        box.close()
        broker.stop()


def test_verdict_rules(tmp_path, broker, outbox):
    """One signal per check-in id, even across a restart; stale, retained, unknown and malformed
    verdicts are not shown, and each is reported on the station's `ignored` topic with the reason."""
    rng = random.Random(5)
    fresh, other, retained_id = (outbox.put(body(rng)).id for _ in range(3))
    old_payload = outbox.get(fresh).payload
    old_id = "019ab1c5-1234-7abc-8def-0123456789ab"
    outbox.import_rows([(old_id, {**old_payload, "id": old_id}, time.time() - 600, 0)])   # read 10 min ago
    shown: list[str] = []
    watcher = Subscriber(broker.port, f"{PREFIX}/{STATION}/ignored", client_id="hospital-watch")
    hospital = client(broker.port, "hospital-verdicts")
    topic = f"{PREFIX}/{STATION}/verdict"

    def verdict(event_id: str, retain: bool = False, **extra) -> None:
        hospital.publish(topic, json.dumps({"id": event_id, "result": "rejected", "code": "010", **extra}),
                         qos=1, retain=retain).wait_for_publish(5)

    def start() -> MqttLink:
        link = MqttLink(cfg(broker.port, verdict_max_age_s=120), STATION, outbox,
                        on_verdict=lambda v: shown.append(v.id), backoff=(0.05, 0.5))
        link.start()
        assert wait_for(lambda: link.state.connected and link.state.subscribed, 5)
        return link

    def reasons() -> list[tuple[str | None, str]]:
        return [(n["id"], n["reason"]) for n in watcher.json_on("/ignored")]

    link = start()
    try:
        verdict(fresh)
        assert wait_for(lambda: shown == [fresh], 5)
        verdict(fresh)                                  # the same verdict again
        verdict(old_id)                                 # 10 minutes after the read
        verdict("019ab1c5-0000-7abc-8def-0123456789ab")  # not a check-in of this station
        hospital.publish(topic, b"\xff not json", qos=1).wait_for_publish(5)
        verdict(retained_id, retain=True)
        want = [(fresh, "repeated"), (old_id, "stale"), ("019ab1c5-0000-7abc-8def-0123456789ab", "unknown"),
                (None, "malformed"), (retained_id, "retained")]
        assert wait_for(lambda: reasons() == want, 5), reasons()
        assert all(schema_errors("ignored", n) == [] for n in watcher.json_on("/ignored"))
        link.stop()
        link = start()            # reconnect: the retained verdict arrives again
        verdict(fresh)            # and a repeat after a restart
        verdict(other)
        assert wait_for(lambda: shown == [fresh, other], 5), shown
        time.sleep(0.5)
        assert shown == [fresh, other], "a retained or repeated verdict was shown"
        assert reasons()[len(want):].count((retained_id, "retained")) == 1
        assert (fresh, "repeated") in reasons()[len(want):]
    finally:
        link.stop()
        hospital.publish(topic, b"", retain=True).wait_for_publish(5)
        hospital.disconnect()
        watcher.close()


def test_queue_retry_resends_on_a_running_station(tmp_path, broker, outbox):
    sub = Subscriber(broker.port, f"{PREFIX}/+/checkin", client_id="hospital-retry")
    rng = random.Random(9)
    rows = [outbox.put(body(rng)) for _ in range(3)]
    # the rescan's default interval (5 s) is tests/test_delivery.py's: here it is shortened
    link = MqttLink(cfg(broker.port), STATION, outbox, backoff=(0.05, 0.5), rescan_every_s=0.5)
    link.start()
    try:
        assert wait_for(lambda: outbox.depth() == 0 and len(sub.json_on("/checkin")) == 3, 10)
        admin = Outbox(outbox.path, station=STATION, admin=True)      # as `scanner-agent queue retry` opens it
        assert retry(admin, [rows[0].id]) == []
        admin.close()
        t0 = time.monotonic()
        assert wait_for(lambda: len(sub.json_on("/checkin")) == 4, 15), "not sent again while running"
        assert time.monotonic() - t0 < 10
        assert sub.json_on("/checkin")[-1]["id"] == rows[0].id
        assert wait_for(lambda: outbox.depth() == 0, 5)
    finally:
        link.stop()
        sub.close()


def test_a_second_client_with_the_station_id_is_named(broker, outbox):
    link = MqttLink(cfg(broker.port), STATION, outbox, backoff=(2.0, 5.0))
    link.start()
    try:
        assert wait_for(lambda: link.state.connected, 5)
        intruder = client(broker.port, STATION)
        assert wait_for(lambda: "is another MQTT client (a consumer, a second station) using the client id"
                        in (link.state.last_error or ""), 20), link.state.last_error
        intruder.disconnect()
    finally:
        link.stop()


def test_a_forged_receipt_counts_only_check_ins_this_station_published_and_awaits(tmp_path, broker, outbox):
    """A receipt (or a verdict, in receipt mode) naming check-ins this station never published
    marked them delivered: they were then never sent. Only ids published and not yet confirmed
    count; the others are reported on `ignored` as unknown."""
    rng = random.Random(8)
    ids = [outbox.put(body(rng)).id for _ in range(6)]
    watcher = Subscriber(broker.port, f"{PREFIX}/{STATION}/+", client_id="hospital-watch")
    link = MqttLink(cfg(broker.port, delivered_on="receipt", receipt_window=2, receipt_timeout_s=60), STATION, outbox,
                    backoff=(0.05, 0.5))
    forger = client(broker.port, "forger")
    try:
        link.start()
        assert wait_for(lambda: len(watcher.json_on("/checkin")) == 2, 5)
        time.sleep(0.3)
        published = {e["id"] for e in watcher.json_on("/checkin")}
        never = [i for i in ids if i not in published]
        forger.publish(f"{PREFIX}/{STATION}/verdict", json.dumps({"id": never[0], "result": "accepted", "code": "000"}),
                       qos=1).wait_for_publish(5)
        forger.publish(f"{PREFIX}/{STATION}/receipt", json.dumps({"ids": ids}), qos=1).wait_for_publish(5)
        assert wait_for(lambda: {n["id"] for n in watcher.json_on("/ignored") if n["reason"] == "unknown"} >= set(never),
                        5), watcher.json_on("/ignored")
        stats = outbox.stats()
        assert stats.delivered_total == 2 and stats.queue_depth == 4, stats   # the two it had published
        forger.publish(f"{PREFIX}/{STATION}/receipt", json.dumps({"ids": sorted(published)}), qos=1).wait_for_publish(5)
        time.sleep(0.5)
        assert outbox.stats().delivered_total == 2   # confirmed already: a repeat counts nothing more
    finally:
        link.stop()
        forger.disconnect()
        watcher.close()


def test_a_flood_of_ignored_messages_is_summed_up_on_a_timer(tmp_path, broker, outbox, monkeypatch, caplog):
    """The per-minute 'ignored' line was written only when the next ignored message arrived: a
    flood that stopped left no trace beyond its first message. Now it is written on a timer."""
    import logging

    caplog.set_level(logging.WARNING, logger="agent.mqtt.link")
    link = MqttLink(cfg(broker.port), STATION, outbox, backoff=(0.05, 0.5), notice_every_s=1.0)
    hospital = client(broker.port, "hospital-flood")
    try:
        link.start()
        assert wait_for(lambda: link.state.connected and link.state.subscribed, 5)
        for _ in range(20):
            hospital.publish(f"{PREFIX}/{STATION}/verdict", b"\xff not json", qos=1).wait_for_publish(5)

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]

        def counted() -> int:   # what the lines account for: the first, any later ones, the summaries
            found = (re.search(r"(\d+) ignored since the last such line|(\d+) more verdicts", line) for line in lines())
            return sum(int(m.group(1) or m.group(2)) for m in found if m)

        # natively (20 messages well within a second): the first line, then one summary of 19; a slower
        # machine may split the flood across periods, but the lines always account for all 20
        assert wait_for(lambda: counted() == 20, 15), lines()
        assert any("more verdicts/receipts ignored" in line for line in lines())   # the timer's summary
        settled = lines()
        time.sleep(1.5)
        assert lines() == settled   # nothing more to say: no further line
    finally:
        link.stop()
        hospital.disconnect()


def test_the_station_advertises_a_maximum_packet_size_and_an_oversized_receipt_never_reaches_it(
        tmp_path, broker, outbox, monkeypatch):
    """A 200 MB message on the receipt topic took a station from 232 to 673 MB resident. The station
    advertises MQTT 5 Maximum Packet Size in CONNECT, so the broker never sends it a larger packet:
    a 2 MB 'receipt' does not reach it (before: it was read whole, then ignored as too large)."""
    from agent.mqtt import link as link_module

    seen: list[int] = []
    original = link_module.MqttLink._on_message
    monkeypatch.setattr(link_module.MqttLink, "_on_message",
                        lambda self, c, u, msg: (seen.append(len(msg.payload)), original(self, c, u, msg)))
    link = MqttLink(cfg(broker.port, delivered_on="receipt"), STATION, outbox, backoff=(0.05, 0.5))
    hospital = client(broker.port, "hospital-big")
    try:
        link.start()
        assert wait_for(lambda: link.state.connected and link.state.subscribed, 5)
        topic = f"{PREFIX}/{STATION}/receipt"
        hospital.publish(topic, b"[" * 2_000_000, qos=1).wait_for_publish(5)
        hospital.publish(topic, b"small and malformed", qos=1).wait_for_publish(5)
        assert wait_for(lambda: len(seen) >= 1, 5)
        time.sleep(0.5)
        assert seen == [len(b"small and malformed")], seen[:5]
        assert link.state.connected
    finally:
        link.stop()
        hospital.disconnect()


# --- 9: text from the hospital --------------------------------------------------------------------

@pytest.mark.slow
def test_verdict_text_is_cleaned_and_logged_once_per_checkin(tmp_path, broker, caplog):
    from agent.mqtt.link import MqttLink

    box = Outbox(tmp_path / "o.db", station="counter-v")
    row = box.put({"card": {}})
    seen = []
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True,
                               keepalive_s=5), "counter-v", box, on_verdict=seen.append, backoff=(0.05, 0.5))
    caplog.set_level(logging.INFO)
    link.start()
    hospital = Subscriber(broker.port, "nothing/#", client_id="hospital")
    try:
        assert Subscriber.wait_for(lambda: link.state.connected and link.state.subscribed, 10)
        evil = "OK\x1b[2J\x07\u202e forged\nINFO agent: check-in accepted"
        topic = "hospital/checkin/counter-v/verdict"
        for i in range(5000):
            body = {"id": row.id, "result": "rejected", "code": "007", "message": evil} if i % 2 == 0 else \
                "\x1b]0;garbage\x07"
            hospital.client.publish(topic, json.dumps(body) if isinstance(body, dict) else body, qos=0)
        hospital.client.publish(topic, json.dumps({"id": row.id, "result": "accepted"}), qos=1).wait_for_publish(10)
        time.sleep(1.5)
    finally:
        link.stop()
        hospital.close()
        box.close()
    assert len(seen) == 1                                   # one signal per check-in id
    message = seen[0].message
    assert "\x1b" not in message and "\x07" not in message and "\u202e" not in message and "\n" not in message
    mqtt_lines = [r for r in caplog.records if r.name == "agent.mqtt.link" and "ignored" in r.getMessage()]
    assert len(mqtt_lines) <= 2, len(mqtt_lines)            # not 5 000 lines
    assert all("\x1b" not in r.getMessage() and "\n" not in r.getMessage() for r in caplog.records)
