"""The hospital's side: the reference consumer (examples/consumer) against a real Mosquitto and a
real PostgreSQL: exactly-once storage through a broker restart and a consumer killed mid-stream,
dead letters for malformed events, and a verdict that reaches the station's LEDs."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from agent.cards import read_card
from agent.checkin import checkin_body
from agent.config import Config, MqttConfig
from agent.mqtt.link import MqttLink
from agent.outbox import Outbox
from agent.sim.payloads import bhyt, cccd
from examples.consumer.consumer import Consumer
from support.broker import Broker, SampleBroker, Subscriber
from support.daemon import FRAMES, ROOT, Daemon, replay_config
from support.postgres import Postgres

pytestmark = pytest.mark.slow
CONSUMER = ROOT / "examples" / "consumer" / "consumer.py"


@pytest.fixture
def postgres(tmp_path):
    pg = Postgres(tmp_path / "pg").start()
    yield pg
    pg.stop()


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchone()[0]


def consumer_process(broker: Broker, pg: Postgres, name: str) -> subprocess.Popen:
    """A consumer in a process of its own (to be killed), returned once it has subscribed: a
    message published while no consumer session exists is dropped by the broker."""
    proc = subprocess.Popen([sys.executable, str(CONSUMER), "--broker", f"127.0.0.1:{broker.port}", "--dsn", pg.dsn,
                             "--name", name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    subscribed = threading.Event()

    def watch() -> None:
        for line in proc.stderr:
            if "subscribed to" in line:
                subscribed.set()
    threading.Thread(target=watch, daemon=True).start()
    assert subscribed.wait(30), f"consumer {name} did not subscribe"
    return proc


def test_exactly_once_through_a_broker_restart_and_a_consumer_kill(tmp_path, postgres):
    broker = Broker(tmp_path / "broker").start()
    box = Outbox(tmp_path / "outbox.db", station="counter-21")
    # require_subscriber: Mosquitto does not keep shared subscriptions across its restart, so
    # check-ins sent before the consumers subscribe again are dropped as "No matching subscribers"
    # (seen: 5 of 300 in 1 run of 6 without it); with it the station sends them again
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True, keepalive_s=5,
                               require_subscriber=True), "counter-21", box, backoff=(0.05, 0.5))
    c1, c2 = consumer_process(broker, postgres, "c1"), consumer_process(broker, postgres, "c2")
    link.start()
    rng = random.Random(3)
    ids = []
    try:
        for i in range(300):
            ids.append(box.put(checkin_body(read_card(bhyt(rng) if i % 2 else cccd(rng)))).id)
            time.sleep(0.004)
            if i == 100:
                c1.send_signal(signal.SIGKILL)          # a consumer dies mid-stream, messages in flight
                c1.wait(5)
            if i == 180:
                broker.stop()                           # the broker restarts (its persistence kept)
                time.sleep(0.5)
                broker.start()
            if i == 220:
                c1 = consumer_process(broker, postgres, "c1")   # and the dead consumer comes back
        assert Subscriber.wait_for(lambda: count(postgres.dsn, "SELECT count(*) FROM checkins") >= 300, 60), \
            count(postgres.dsn, "SELECT count(*) FROM checkins")
        time.sleep(1.0)
        with psycopg.connect(postgres.dsn) as conn:
            stored = [str(r[0]) for r in conn.execute("SELECT id FROM checkins")]
        assert sorted(stored) == sorted(ids)            # every check-in, exactly once, nothing else
        assert count(postgres.dsn, "SELECT count(*) FROM dead_letters") == 0
        print(f"\nCONSUMER | produced 300 | stored {len(stored)} | lost {300 - len(set(stored) & set(ids))} |")
    finally:
        link.stop()
        for c in (c1, c2):
            if c.poll() is None:
                c.terminate()
                c.wait(5)
        broker.stop()
        box.close()


def test_malformed_events_go_to_dead_letters_and_the_consumer_goes_on(tmp_path, postgres, broker):
    consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="dl").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="evil-station")
    try:
        assert consumer.subscribed.wait(5)
        topic = "hospital/checkin/counter-x/checkin"
        for payload in (b"\xff not json", b"[1, 2]", json.dumps({"id": "nope"}).encode()):
            pub.client.publish(topic, payload, qos=1).wait_for_publish(5)
        good = {"schema": "1.0", "id": "018f0000-0000-7000-8000-000000000001", "seq": 1, "station": "counter-x",
                **checkin_body(read_card(cccd(random.Random(1))), synced=True)}
        pub.client.publish(topic, json.dumps(good), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: count(postgres.dsn, "SELECT count(*) FROM checkins") == 1, 10)
        with psycopg.connect(postgres.dsn) as conn:
            reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters ORDER BY n")]
        assert len(reasons) == 3 and all(reasons)
    finally:
        pub.close()
        consumer.stop()


def test_a_verdict_reaches_the_station_and_lights_the_hospital_answer(tmp_path, postgres, broker):
    from agent.feedback import Feedback, Signal
    from agent.feedback.player import NoOutput
    from agent.station import Station

    consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="verdicts").start()
    cfg = replay_config(tmp_path / "state", station="counter-22")
    cfg.camera.fps = 20.0
    cfg.mqtt = MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True)
    station = Station(cfg, feedback=Feedback(NoOutput()))
    runner = threading.Thread(target=station.run)
    try:
        assert consumer.subscribed.wait(5)
        runner.start()
        signals = lambda: [s for _, s in station.feedback.history]  # noqa: E731
        assert Subscriber.wait_for(lambda: Signal.VERDICT_ACCEPTED in signals(), 30), signals()
        with psycopg.connect(postgres.dsn) as conn:
            rows = conn.execute("SELECT station, result_code FROM checkins").fetchall()
        assert rows and all(r[0] == "counter-22" for r in rows) and "000" in [r[1] for r in rows]
    finally:
        station.stop()
        runner.join(10)
        consumer.stop()


def test_receipts_from_the_reference_consumer_mark_check_ins_delivered(tmp_path, postgres, broker):
    """A station in receipt mode counts nothing delivered until the reference consumer committed it;
    then its receipts (duplicates included) empty the station's queue."""
    box = Outbox(tmp_path / "outbox.db", station="counter-22")
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True, keepalive_s=5,
                               delivered_on="receipt", receipt_timeout_s=1), "counter-22", box, backoff=(0.05, 0.5))
    rng = random.Random(22)
    ids = [box.put(checkin_body(read_card(bhyt(rng)))).id for _ in range(20)]
    link.start()
    consumer = None
    try:
        time.sleep(2)                                   # the broker took them; no consumer stored any
        assert box.depth() == 20 and box.stats().delivered_total == 0
        consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="rc").start()
        assert Subscriber.wait_for(lambda: box.depth() == 0, 30), box.depth()
        with psycopg.connect(postgres.dsn) as conn:
            assert sorted(str(r[0]) for r in conn.execute("SELECT id FROM checkins")) == sorted(ids)
        assert link.health()["awaiting_receipt"] == 0
    finally:
        link.stop()
        if consumer:
            consumer.stop()
        box.close()


def test_a_station_and_the_reference_consumer_through_the_guides_sample_broker(tmp_path, postgres):
    """docs/integrating.md's first ten minutes, for real: the sample broker (TLS listener, the
    password file from make-passwd.sh, the ACL with %u patterns), a station daemon in receipt mode
    logged in as itself, the reference consumer logged in as 'hospital' on a shared subscription:
    check-ins land in PostgreSQL, their receipts and verdicts are allowed back to the station."""
    broker = SampleBroker(tmp_path / "sample", ["counter-23"])
    conf = broker.station_config(tmp_path / "st", "counter-23", broker.passwords["counter-23"],
                                 'delivered_on = "receipt"')
    consumer = Consumer("localhost", broker.port, postgres.dsn, name="sample", tls_ca=str(broker.ca["ca"]),
                        username="hospital", password=broker.passwords["hospital"]).start()
    d = None
    try:
        assert consumer.subscribed.wait(10), "the sample ACL refused the consumer's shared subscription"
        d = Daemon(conf)
        assert d.wait_for(lambda: count(postgres.dsn, "SELECT count(*) FROM checkins") >= 3, 60), d.log[-2000:]
        d.stop()
        box = Outbox(tmp_path / "st" / "state" / "outbox.db", station="counter-23", readonly=True)
        try:
            recorded = len(d.recorded())
            stats = box.stats()
            assert stats.delivered_total >= 3, "no receipt reached the station through the sample ACL"
            assert stats.delivered_total + stats.queue_depth == recorded
        finally:
            box.close()
        assert "hospital verdict for" in d.log, "no verdict reached the station through the sample ACL"
        assert count(postgres.dsn, "SELECT count(*) FROM dead_letters") == 0
    finally:
        if d is not None and d.proc.poll() is None:
            d.stop()
        consumer.stop()
        broker.stop()


def first_ten_minutes() -> list[str]:
    """The numbered steps of docs/integrating.md's "The first ten minutes", in order."""
    import re

    text = (ROOT / "docs" / "integrating.md").read_text()
    section = text.split("## The first ten minutes", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*?)(?=^\d+\. |\Z)", section, re.M | re.S)]


def test_the_first_ten_minutes_start_the_consumer_before_the_stations():
    """Stations set up before the consumer lose the check-ins of the gap (delivered on the broker's
    acknowledgement, dropped by the broker with nobody subscribed): the guide starts the consumer
    first and the stations in receipt mode with require_subscriber from their first check-in."""
    steps = first_ten_minutes()
    consumer = next(i for i, s in enumerate(steps) if s.startswith("**Consumer"))
    stations = next(i for i, s in enumerate(steps) if s.startswith("**Stations"))
    assert consumer < stations, steps
    assert 'delivered_on = "receipt"' in steps[stations] and "require_subscriber = true" in steps[stations]


@pytest.mark.slow   # a daemon, a broker and PostgreSQL, in real time
def test_a_station_set_up_as_the_guide_says_loses_nothing_before_the_consumer_runs(tmp_path, postgres, broker):
    """Even out of order: a station with the guide's settings (receipt mode, require_subscriber)
    records check-ins while no consumer runs; once the consumer starts, every one of them is stored."""
    from support.daemon import config

    conf = config(tmp_path, tmp_path / "state", station="counter-31", port=broker.port)
    conf.write_text(conf.read_text() + 'delivered_on = "receipt"\nrequire_subscriber = true\n')
    d = Daemon(conf)
    consumer = None
    try:
        assert d.wait_for(lambda: len(d.recorded()) >= 3, 60), d.log[-2000:]
        time.sleep(1.5)                        # published meanwhile: nobody subscribed
        before = d.recorded()
        consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="late").start()
        assert consumer.subscribed.wait(5)

        def stored() -> set[int]:
            with psycopg.connect(postgres.dsn) as db:
                return {r[0] for r in db.execute("SELECT seq FROM checkins WHERE station = 'counter-31'")}
        assert d.wait_for(lambda: before <= stored(), 60), (sorted(before), sorted(stored()), d.log[-2000:])
    finally:
        d.stop()
        if consumer:
            consumer.stop()


def test_replies_go_to_the_sending_topic_and_late_check_ins_get_no_verdict(tmp_path, postgres, broker):
    """Receipts and verdicts go to the station whose topic the event came on; a check-in read 10
    minutes ago (clock synchronised) is stored and receipted but gets no verdict: stations would
    not show it."""
    from datetime import datetime, timedelta, timezone

    consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="replies").start()
    watch = Subscriber(broker.port, "hospital/checkin/+/+", client_id="hospital-watch")
    try:
        assert consumer.subscribed.wait(5)
        base = checkin_body(read_card(cccd(random.Random(4))), synced=True)
        late_at = (datetime.now(timezone.utc) - timedelta(minutes=10)).isoformat(timespec="milliseconds")
        fresh = {"schema": "1.0", "id": "018f0000-0000-7000-8000-0000000000a1", "seq": 1, "station": "counter-y", **base}
        late = {**fresh, "id": "018f0000-0000-7000-8000-0000000000a2", "seq": 2, "read_at": late_at}
        for event in (fresh, late):
            watch.client.publish("hospital/checkin/counter-y/checkin", json.dumps(event), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: len(watch.json_on("/receipt")) == 2, 10)
        time.sleep(0.5)
        topics = {t for t, _, _ in watch.messages if not t.endswith("/checkin")}
        assert topics == {"hospital/checkin/counter-y/receipt", "hospital/checkin/counter-y/verdict"}
        assert [v["id"] for v in watch.json_on("/verdict")] == [fresh["id"]]
        assert count(postgres.dsn, "SELECT count(*) FROM checkins") == 2
    finally:
        watch.close()
        consumer.stop()


def _event(n: int, **changes) -> dict:
    """A valid check-in (id ending in n), with some fields changed."""
    base = {"schema": "1.0", "id": f"018f0000-0000-7000-8000-{n:012d}", "seq": n, "station": "counter-x",
            **checkin_body(read_card(cccd(random.Random(n))), synced=True)}
    for key, value in changes.items():
        if key.startswith("card_"):
            base["card"][key[5:]] = value
        else:
            base[key] = value
    return base


def poison_messages() -> list[tuple[bytes, str]]:
    """25 check-ins a consumer must dead-letter (the payload, a word its reason must contain): each
    fails validation or the insert because of what it holds."""
    out: list[tuple[bytes, str]] = []
    kinds = [
        (lambda n: json.dumps(_event(n, card_name="Nguyễn\u0000Văn A")).encode(), "u0000"),
        (lambda n: json.dumps(_event(n, seq=10**20)).encode(), "range"),
        (lambda n: json.dumps(_event(n, read_at="2025-13-45T99:00:00+07:00")).encode(), "date-time"),
        (lambda n: b"[" * (100_000 + n), "bytes"),      # refused for its size before its nesting
        (lambda n: b'{"id": ' + b"[" * (60_000 + n), "nest"),
        (lambda n: json.dumps(_event(n, card_extra="@@")).replace('"@@"', "[" * 5000 + "]" * 5000).encode(),
         "nest"),
        (lambda n: json.dumps(_event(n, read_at="0000-01-01T00:00:00+07:00")).encode(), "date-time"),
        (lambda n: json.dumps(_event(n, card_address="x" * 300_000)).encode(), "bytes"),
    ]
    for n in range(25):
        make, word = kinds[n % len(kinds)]
        out.append((make(900 + n), word))
    return out


def dead_letters(dsn: str) -> list[tuple[bytes, str]]:
    with psycopg.connect(dsn) as conn:
        return [(bytes(p), r) for p, r in conn.execute("SELECT payload, reason FROM dead_letters ORDER BY n")]


def stored_ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [str(r[0]) for r in conn.execute("SELECT id FROM checkins")]


def test_poison_messages_and_hostile_nesting_are_dead_lettered_acknowledged_and_good_ones_stored(
        tmp_path, postgres, broker):
    """25 poison check-ins (NUL in a name, seq = 10**20, read_at 2025-13-45T99:00, 100,000 '[',
    nesting inside a card, year 0, 300 kB) and then good ones: every good one stored once, every bad
    one dead-lettered with its reason and acknowledged (a new session of the consumer gets none of
    them again). Before the fix: none dead-lettered, 0 of 5 good stored."""
    consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="poison").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="evil-station")
    topic = "hospital/checkin/counter-x/checkin"
    poison = poison_messages()
    good = [_event(n) for n in range(1, 6)]
    try:
        assert consumer.subscribed.wait(5)
        for payload, _ in poison:
            pub.client.publish(topic, payload, qos=1).wait_for_publish(5)
        for event in good:
            pub.client.publish(topic, json.dumps(event), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: len(stored_ids(postgres.dsn)) == 5 and
                                   len(dead_letters(postgres.dsn)) == 25, 30), \
            (len(stored_ids(postgres.dsn)), len(dead_letters(postgres.dsn)))
        assert sorted(stored_ids(postgres.dsn)) == sorted(e["id"] for e in good)
        letters = dead_letters(postgres.dsn)
        for (payload, word), (kept, reason) in zip(poison, letters):
            assert kept == payload[:64 * 1024]          # kept whole up to 64 kB, in the order they came
            assert word in reason.lower(), (word, reason)
        with psycopg.connect(postgres.dsn) as conn:    # and the size and sha256 of every one
            sizes = [(size, bytes(digest)) for size, digest in conn.execute("SELECT size, sha256 FROM dead_letters "
                                                                          "ORDER BY n")]
        assert sizes == [(len(p), hashlib.sha256(p).digest()) for p, _ in poison]
        assert consumer.dead == 25 and consumer.stored == 5
    finally:
        consumer.stop()
    # acknowledged: the same consumer session, back again, is sent none of them
    again = Consumer("127.0.0.1", broker.port, postgres.dsn, name="poison").start()
    try:
        assert again.subscribed.wait(5)
        time.sleep(2)
        assert len(dead_letters(postgres.dsn)) == 25 and again.dead == 0 and again.duplicates == 0
    finally:
        again.stop()
        pub.close()


def test_the_consumer_survives_a_postgresql_restart(tmp_path, postgres, broker):
    """PostgreSQL restarts between two check-ins, and is down while some arrive: the consumer
    reconnects with back-off and stores every one of them, once. Before the fix the first
    failed rollback() killed paho's thread: nothing more was consumed."""
    consumer = Consumer("127.0.0.1", broker.port, postgres.dsn, name="pgrestart", db_backoff=(0.1, 1.0)).start()
    pub = Subscriber(broker.port, "nothing/#", client_id="a-station")
    topic = "hospital/checkin/counter-x/checkin"
    try:
        assert consumer.subscribed.wait(5)
        pub.client.publish(topic, json.dumps(_event(1)), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: consumer.stored == 1, 10)
        postgres.restart()                              # every connection to it is closed
        pub.client.publish(topic, json.dumps(_event(2)), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: consumer.stored == 2, 20), consumer.stored
        postgres.stop()                                 # down while check-ins arrive
        for n in range(3, 8):
            pub.client.publish(topic, json.dumps(_event(n)), qos=1).wait_for_publish(5)
        time.sleep(2)
        postgres.start()
        assert Subscriber.wait_for(lambda: len(stored_ids(postgres.dsn)) == 7, 30), consumer.stored
        assert sorted(stored_ids(postgres.dsn)) == sorted(_event(n)["id"] for n in range(1, 8))
        assert dead_letters(postgres.dsn) == []
    finally:
        pub.close()
        consumer.stop()
