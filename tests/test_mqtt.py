"""The MQTT link against a real Mosquitto: delivery, outages, restarts, TLS, auth, ACL, verdicts.

Also: plaintext is warned about, and TLS to a plain port is named."""

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.config import MqttConfig
from agent.mqtt.link import MqttLink
from agent.mqtt.messages import Verdict
from agent.mqtt.schemas import errors as schema_errors
from agent.mqtt.session import InsecureBroker
from agent.outbox import Outbox
from support.broker import Broker, Subscriber, make_ca
from support.broker import link_config as cfg

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "hospital/checkin"
wait_for = Subscriber.wait_for


def body(i=0):
    return {"read_at": "2026-11-24T08:00:00.000+07:00", "clock_synced": False, "kind": "bhyt", "verdict": "ok",
            "problems": [{"code": "lookup_required", "message": "look it up"}],
            "card": {"card_number": "7901234567", "generation": "10", "bhxh_number": "7901234567",
                     "name": f"Trần Thị Bích {i}", "birth_date": "1985-03-15", "sex": "female", "address": None,
                     "facility_code": "79034", "valid_from": "2025-02-01", "valid_to": None,
                     "issued": "2025-02-20", "management_code": "79020123456700", "benefit_level": 4,
                     "group_code": None, "check_string": "15e89ac07ee8517f-7102", "province_code": None,
                     "guardian": None, "residence_code": None, "five_year_date": None,
                     "issuing_office": "Hà Nội", "terminator": "$"}}


def start_link(outbox, config, **kw):
    kw.setdefault("backoff", (0.05, 0.5))
    link = MqttLink(config, "counter-01", outbox, **kw)
    link.start()
    return link


def first_seen_seqs(events):
    seen, order = set(), []
    for e in events:
        if e["id"] not in seen:
            seen.add(e["id"])
            order.append(e["seq"])
    return order


def test_insecure_broker_refused_unless_allowed(outbox):
    with pytest.raises(InsecureBroker, match="without TLS"):
        MqttLink(MqttConfig(host="h", port=1883, tls=False), "s", outbox)


def test_delivery_status_health_and_schemas(broker, outbox):
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    rows = [outbox.put(body(i)) for i in range(5)]
    link = start_link(outbox, cfg(broker.port))
    try:
        assert wait_for(lambda: outbox.depth() == 0 and len(sub.json_on("/checkin")) >= 5, 10)
        events = sub.json_on("/checkin")
        assert [e["id"] for e in events] == [r.id for r in rows]
        assert all(outbox.get(r.id).attempts >= 1 and outbox.get(r.id).delivered_at for r in rows)
        for e in events:
            assert schema_errors("checkin", e) == []
        assert sub.json_on("/status")[0]["state"] == "online"
        # health goes out on connect (queue full) and every second after (queue drained)
        assert wait_for(lambda: any(h["queue_depth"] == 0 for h in sub.json_on("/health")), 5)
        health = sub.json_on("/health")
        assert health[0]["queue_depth"] == 5 and health[-1]["delivered_total"] == 5
        for h in health:
            assert schema_errors("health", h) == []
        assert link.state.connected and link.state.last_error is None
    finally:
        link.stop()
    assert wait_for(lambda: sub.json_on("/status")[-1]["state"] == "offline", 5)
    assert schema_errors("status", sub.json_on("/status")[-1]) == []
    # a consumer arriving later gets the retained status and health at once
    late = Subscriber(broker.port, f"{PREFIX}/+/status", client_id="late")
    assert wait_for(lambda: late.json_on("/status"), 5)
    assert late.json_on("/status")[0]["state"] == "offline"
    late.close()
    sub.close()


@pytest.mark.slow
def test_burst_of_1000_through_outages_arrives_complete_and_in_order(tmp_path, outbox):
    broker = Broker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, f"{PREFIX}/counter-01/checkin")
    broker.stop()                                   # down before the burst
    link = start_link(outbox, cfg(broker.port))
    try:
        ids = [outbox.put(body(i)).id for i in range(500)]
        time.sleep(0.5)
        assert outbox.depth() == 500 and not link.state.connected
        assert "connection refused" in link.state.last_error
        broker.start()                              # up: the queue starts draining
        for i in range(500, 1000):                  # ... and down again during the burst
            ids.append(outbox.put(body(i)).id)
            if i == 700:
                broker.stop()
                time.sleep(0.3)
                broker.start()
        assert wait_for(lambda: outbox.depth() == 0, 60), f"{outbox.depth()} still queued"
        assert wait_for(lambda: {e["id"] for e in sub.json_on("/checkin")} >= set(ids), 30)
        events = sub.json_on("/checkin")
        assert {e["id"] for e in events} == set(ids)            # every id at least once
        order = first_seen_seqs(events)
        assert order == sorted(order) == list(range(1, 1001))   # in sequence order
        assert all(schema_errors("checkin", e) == [] for e in events)
    finally:
        link.stop()
        sub.close()
        broker.stop()


@pytest.mark.slow
def test_sigkill_while_publishing_loses_nothing(tmp_path, broker):
    sub = Subscriber(broker.port, f"{PREFIX}/kill-test/checkin")
    db = tmp_path / "kill.db"
    child = [sys.executable, str(ROOT / "tests" / "support" / "agent_child.py"), str(db), str(broker.port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    promised: list[str] = []
    rng = random.Random(7)
    for run in range(5):
        proc = subprocess.Popen(child + ["produce", "120"], stdout=subprocess.PIPE, text=True, env=env)
        first = proc.stdout.readline()        # started storing (imports take a while on a loaded CI)
        time.sleep(rng.uniform(0.0, 0.4))     # ... then killed at a random point while producing
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        promised += [line for line in (first + out).splitlines() if len(line) == 36]
    done = subprocess.run(child + ["drain"], capture_output=True, text=True, env=env, timeout=90)
    assert done.stdout.strip().endswith("DONE"), done.stdout + done.stderr
    assert promised, "the child never got to store anything"
    assert wait_for(lambda: {e["id"] for e in sub.json_on("/checkin")} >= set(promised), 20)
    received = {e["id"]: e["seq"] for e in sub.json_on("/checkin")}
    assert all(schema_errors("checkin", e) == [] for e in sub.json_on("/checkin"))
    # every stored event arrived, with no gap in the sequence
    ob = Outbox(db, station="kill-test")
    stored = ob._rows("ORDER BY seq", [])
    assert {r.id for r in stored} <= set(received) and len(stored) >= len(promised)
    assert sorted(received.values()) == list(range(1, len(received) + 1))
    ob.close()
    sub.close()


def test_tls_good_ca_delivers_and_wrong_ca_is_refused(tmp_path, outbox):
    good, other = make_ca(tmp_path / "pki", "good"), make_ca(tmp_path / "pki", "other")
    broker = Broker(tmp_path / "broker", tls=good).start()
    try:
        outbox.put(body())
        link = start_link(outbox, cfg(broker.port, tls=True, allow_insecure=False, ca_file=str(other["ca"])))
        assert wait_for(lambda: link.state.failed_attempts >= 2, 10)
        link.stop()
        assert "certificate" in link.state.last_error and outbox.depth() == 1
        link = start_link(outbox, cfg(broker.port, tls=True, allow_insecure=False, ca_file=str(good["ca"])))
        assert wait_for(lambda: outbox.depth() == 0, 10)
        link.stop()
    finally:
        broker.stop()


def test_bad_password_reported_and_retried_with_backoff(tmp_path, outbox):
    broker = Broker(tmp_path / "broker", users={"station": "right"}).start()
    try:
        outbox.put(body())
        link = start_link(outbox, cfg(broker.port, username="station", password="wrong"), backoff=(0.1, 0.8))
        assert wait_for(lambda: link.state.failed_attempts >= 7, 30)
        link.stop()
        assert "Bad user name or password" in link.state.last_error or "Not authorized" in link.state.last_error
        gaps = [b - a for a, b in zip(link.state.history, link.state.history[1:])]
        # grows, and is capped at the maximum (0.8 s, plus 0.6 s for the refused login's round trip
        # under load): uncapped, the sixth delay would be at least 1.6 s (jitter: half to all of 3.2)
        assert gaps[-1] > gaps[0] and len(gaps) >= 6 and max(gaps) <= 0.8 + 0.6, gaps
        assert outbox.depth() == 1
        link = start_link(outbox, cfg(broker.port, username="station", password="right"))
        assert wait_for(lambda: outbox.depth() == 0, 10)
        link.stop()
    finally:
        broker.stop()


def test_acl_denying_the_topic_is_reported_without_busy_loop(tmp_path, outbox):
    acl = "user station\ntopic readwrite hospital/checkin/counter-01/status\n" \
          "topic readwrite hospital/checkin/counter-01/health\ntopic read hospital/checkin/counter-01/verdict\n"
    broker = Broker(tmp_path / "broker", users={"station": "pw"}, acl=acl).start()
    try:
        outbox.put(body())
        link = start_link(outbox, cfg(broker.port, username="station", password="pw"), backoff=(0.2, 1.0))
        assert wait_for(lambda: link.state.failed_total >= 1, 30)
        first = link.state.failed_total
        time.sleep(3)
        link.stop()
        assert link.state.failed_total - first <= 8, "publishes refused by the ACL must be retried with backoff"
        assert "refused a check-in" in link.state.last_error and "authori" in link.state.last_error.lower()
        assert outbox.depth() == 1  # still queued, never marked delivered
    finally:
        broker.stop()


def test_verdicts_garbage_ignored_valid_delivered(broker, outbox):
    got = []
    row = outbox.put(body())
    link = start_link(outbox, cfg(broker.port), on_verdict=got.append)
    pub = Subscriber(broker.port, "unused/topic", client_id="hospital")
    topic = f"{PREFIX}/counter-01/verdict"
    try:
        assert wait_for(lambda: link.state.connected and link.state.subscribed and outbox.depth() == 0, 10)
        for junk in [b"", b"\xff\xfe", b"not json", b"[]", b"null", b'{"id": 5}', b"{" * 10000,
                     json.dumps({"id": row.id, "result": "maybe"}).encode(),
                     json.dumps({"id": "01a20c7a-cf1f-70ea-bfde-3bcbbc7f3c69", "result": "accepted"}).encode(),
                     b"x" * 100_000]:
            pub.client.publish(topic, junk, qos=1)
        good = {"id": row.id, "result": "rejected", "code": "070", "message": "Sai ngày sinh"}
        pub.client.publish(topic, json.dumps(good, ensure_ascii=False).encode(), qos=1)
        assert wait_for(lambda: got, 5)
        time.sleep(0.3)
        assert got == [Verdict(**good)]
        assert link.state.connected and link._thread.is_alive()
    finally:
        link.stop()
        pub.close()


def test_last_will_marks_station_offline_when_killed(tmp_path, broker):
    sub = Subscriber(broker.port, f"{PREFIX}/kill-test/status")
    db = tmp_path / "will.db"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "agent_child.py"), str(db), str(broker.port),
                             "produce", "100000"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert wait_for(lambda: [s for s in sub.json_on("/status") if s["state"] == "online"], 10)
        proc.kill()
        # keepalive 5 s: the broker publishes the will within 1.5 keepalives
        assert wait_for(lambda: sub.json_on("/status")[-1]["state"] == "offline", 12)
        assert sub.json_on("/status")[-1]["reason"] == "connection lost"
    finally:
        proc.kill()
        proc.wait()
        sub.close()


def test_a_refused_login_is_a_fault_in_status_and_health(tmp_path):
    """The broker refusing the station's password is IT's to fix, and nothing is sent until then:
    a fault in status (exit 2) and in the health report, not only a log line; it goes away once
    the login works. Not on the counter's LEDs (the broker signal shows it there)."""
    from agent.feedback import Feedback, NoOutput
    from agent.station import Station
    from support.daemon import replay_config

    broker = Broker(tmp_path / "broker", users={"counter-05": "right"},
                    acl="user counter-05\ntopic readwrite hospital/checkin/counter-05/#\n").start()
    conf = replay_config(tmp_path / "state", station="counter-05")
    conf.mqtt = cfg(broker.port, username="counter-05", password="wrong")
    station = Station(conf, feedback=Feedback(NoOutput()))
    station.link.backoff_min, station.link.backoff_max = 0.1, 0.3
    station.link.start()
    try:
        assert Subscriber.wait_for(lambda: station.link.fault_item is not None, 10)
        fault = station.link.fault_item
        code, text = fault.code, fault.text
        assert code == "mqtt_login_refused" and "refused this station's login" in text and "password" in text
        assert any("refused this station's login" in f for f in station.status().faults)
        assert not any("login" in f for f in station.faults(leds=True))
        health = station.link.health()
        assert "mqtt_login_refused" in health["fault_codes"] and schema_errors("health", health) == []
        from agent.admin import status as st
        from agent.admin.status import level
        info = {"faults": station.faults(), "camera": {}, "outbox": {}, "daemon": "running", "mqtt": {},
                "clock_synced": True}
        assert level(info)[0] == st.FAULT
        station.link.cfg.password = "right"                 # IT fixes the password
        station.link.client.username_pw_set("counter-05", "right")
        assert Subscriber.wait_for(lambda: station.link.state.connected, 10)
        assert station.link.fault_item is None
    finally:
        station.link.stop()
        station.outbox.close()
        station.feedback.close()
        broker.stop()


def test_plaintext_is_warned_and_tls_to_a_plain_port_is_named(tmp_path, broker, caplog):
    from agent.mqtt.link import MqttLink

    box = Outbox(tmp_path / "o.db", station="s")
    caplog.set_level(logging.WARNING)
    plain = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True), "s", box)
    assert "WITHOUT TLS" in caplog.text
    plain.client.socket()  # never started
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=True), "s", box, backoff=(0.1, 0.2))
    link.start()
    try:
        assert Subscriber.wait_for(lambda: link.state.last_error and "TLS port" in link.state.last_error, 10), \
            link.state.last_error
        assert f"is 127.0.0.1:{broker.port} a TLS port?" in link.state.last_error
    finally:
        link.stop()
        box.close()


# --- issue 32, item 1: a check-in the broker will not take holds up nothing ------------------------

def largest_card_body():
    """The largest check-in the card reader can give (tests/support/payloads.py): about 17 kB, within
    what the station stores and publishes."""
    from datetime import date

    from agent.cards import read_card
    from agent.checkin import checkin_body
    from support.payloads import LARGEST_CCCD

    read = read_card(LARGEST_CCCD, today=date(2026, 1, 1))
    assert read.verdict == "ok", read.problems
    return checkin_body(read)


@pytest.mark.parametrize("limit, attempts", [("message_size_limit 4096", 2), ("max_packet_size 4096", 0)])
def test_a_check_in_the_broker_will_not_take_is_set_aside_and_holds_up_nothing(tmp_path, outbox, limit, attempts):
    """Issue 32 item 1: one check-in larger than the broker takes, first in the queue, and ten after it.
    Mosquitto closes the connection on it (max_packet_size: "oversize packet"; message_size_limit:
    a PUBACK 0x95 paho cannot read), and on main the station sent it again every second and
    delivered nothing. Now the ten are delivered, in order, and the large one is set aside as
    undeliverable: still in the outbox, counted in health, never sent again. max_packet_size is
    in the broker's CONNACK: the row is set aside before it is ever sent."""
    broker = Broker(tmp_path / "broker", extra=(limit,)).start()
    sub = Subscriber(broker.port, f"{PREFIX}/#")
    big = outbox.put(largest_card_body())
    rows = [outbox.put(body(i)) for i in range(10)]
    link = start_link(outbox, cfg(broker.port), backoff=(0.05, 0.2))
    try:
        assert wait_for(lambda: outbox.depth() == 1, 15), f"{outbox.depth()} undelivered: the large one holds up the rest"
        # (the rows in flight behind it when the broker closed the connection came again: at least once)
        assert list(dict.fromkeys(e["id"] for e in sub.json_on("/checkin"))) == [r.id for r in rows]
        kept = outbox.get(big.id)
        assert kept.delivered_at is None and kept.undeliverable_at and kept.payload == big.payload
        assert kept.attempts == attempts, kept.attempts
        assert ("Maximum Packet Size" if attempts == 0 else "closed the connection") in kept.undeliverable_reason
        assert outbox.stats().undeliverable == 1
        assert wait_for(lambda: any(h.get("undeliverable") == 1 for h in sub.json_on("/health")), 5)
        for h in sub.json_on("/health"):
            assert schema_errors("health", h) == []
        later = outbox.put(body(99))
        assert wait_for(lambda: outbox.get(later.id).delivered_at, 5)
        assert outbox.get(big.id).attempts == attempts        # never sent again
        assert link.state.connected
    finally:
        link.stop()
        sub.close()
        broker.stop()


def test_the_largest_payload_the_brokers_maximum_packet_size_leaves_room_for_is_exact(tmp_path):
    """The station sets aside what the broker's Maximum Packet Size has no room for, before sending:
    agent.mqtt.session.max_payload goes through; a few bytes more close the connection (MQTT 5 counts
    the whole packet; Mosquitto 2.0 lets 2 bytes more through than that)."""
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    import paho.mqtt.client as mqtt

    from agent.mqtt.session import max_payload

    broker = Broker(tmp_path / "broker", extra=("max_packet_size 1000",)).start()
    topic = f"{PREFIX}/counter-01/checkin"
    try:
        for extra, kept in ((0, True), (3, False)):
            events = []
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{extra}", protocol=MQTTProtocolVersion.MQTTv5)
            c.on_connect = lambda c, u, f, rc, p: events.append(("max", p.MaximumPacketSize))
            c.on_publish = lambda c, u, mid, rc, p: events.append(("puback", str(rc)))
            c.on_disconnect = lambda c, u, f, rc, p: events.append(("closed", str(rc)))
            c.connect("127.0.0.1", broker.port)
            assert wait_for(lambda: c.loop(0.05) is not None and events, 5)
            room = max_payload(topic, events[0][1])
            c.publish(topic, b"x" * (room + extra), qos=1)
            assert wait_for(lambda: c.loop(0.05) is not None and len(events) > 1, 5)
            assert (events[1][0] == "puback") == kept, events
            c.disconnect()
    finally:
        broker.stop()


def test_a_row_larger_than_the_station_publishes_is_set_aside_before_it_is_sent(tmp_path, broker, outbox):
    """A row an older version let in (`queue import` checked only the line's length) is set aside
    before it is sent, with the station's own bound, whatever the broker takes."""
    from agent.event import MAX_CHECKIN_BYTES

    old = outbox.put(body())
    payload = {**old.payload, "card": {**old.payload["card"], "address": "x" * MAX_CHECKIN_BYTES}}
    outbox.db.execute("UPDATE events SET payload = ? WHERE id = ?", [json.dumps(payload), old.id])
    rows = [outbox.put(body(i)) for i in range(3)]
    sub = Subscriber(broker.port, f"{PREFIX}/+/checkin")
    link = start_link(outbox, cfg(broker.port))
    try:
        assert wait_for(lambda: outbox.depth() == 1, 10)
        assert [e["id"] for e in sub.json_on("/checkin")] == [r.id for r in rows]
        kept = outbox.get(old.id)
        assert kept.undeliverable_at and kept.attempts == 0 and f"({MAX_CHECKIN_BYTES} bytes" in kept.undeliverable_reason
    finally:
        link.stop()
        sub.close()
