"""The reference consumer believes the topic, not the payload (issue 32 item 5): a check-in whose
`station` is not the station its topic names is a dead letter; an id seen again is a duplicate
only with the same content from the same station (compared on the id's canonical, lower-case
form), else a collision: dead-lettered with the reason, logged, never receipted. Real Mosquitto,
real PostgreSQL."""

from __future__ import annotations

import json
import logging
import random
import time

import psycopg
import pytest

from agent.cards import read_card
from agent.checkin import checkin_body
from agent.sim.payloads import bhyt, cccd
from examples.consumer.consumer import Consumer
from support.broker import Subscriber
from support.postgres import Postgres

pytestmark = pytest.mark.slow   # a PostgreSQL cluster of its own
PREFIX = "hospital/checkin"


def event(n: int, station: str, **changes) -> dict:
    card = read_card((bhyt if n % 2 else cccd)(random.Random(n)))
    return {"schema": "1.0", "id": f"018f0000-0000-7000-8000-{n:012d}", "seq": n, "station": station,
            **checkin_body(card, synced=True), **changes}


def test_the_topic_names_the_station_and_a_reused_id_is_a_collision_never_receipted(tmp_path, broker, caplog):
    """st2 publishes a check-in claiming st1 (before the fix: stored as st1's), then st1's id with
    its own content, lower- and upper-case, and st1's very check-in as its own; st1 sends its id
    with other content (before the fix: all four dropped as duplicates, and receipted). st1
    sending its check-in again, its id upper-cased or not, is a duplicate: receipted again, stored
    once."""
    caplog.set_level(logging.WARNING, logger="consumer")
    pg = Postgres(tmp_path / "pg").start()
    consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="stations").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="some-publisher")
    watch = Subscriber(broker.port, f"{PREFIX}/+/receipt", client_id="hospital-watch")
    first = event(1, "st1")
    claim = event(2, "st1")                                          # on st2's topic
    reuse = event(3, "st2", id=first["id"])                          # st1's id, st2's check-in
    reuse_upper = {**reuse, "id": first["id"].upper()}
    copied = {**first, "station": "st2"}                             # st1's check-in, as st2's
    altered = event(4, "st1", id=first["id"])                        # st1's id on another of its check-ins
    again, again_upper = first, {**first, "id": first["id"].upper()}
    sent = [("st1", first), ("st2", claim), ("st2", reuse), ("st2", reuse_upper), ("st2", copied),
            ("st1", altered), ("st1", again), ("st1", again_upper)]
    try:
        assert consumer.subscribed.wait(5)
        for station, e in sent:
            pub.client.publish(f"{PREFIX}/{station}/checkin", json.dumps(e), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: consumer.stored + consumer.duplicates + consumer.dead == 8, 15), \
            (consumer.stored, consumer.duplicates, consumer.dead)
        with psycopg.connect(pg.dsn) as conn:
            stored = conn.execute("SELECT id::text, station, payload->>'station' FROM checkins").fetchall()
            assert stored == [(first["id"], "st1", "st1")]
            letters = conn.execute("SELECT publisher, reason FROM dead_letters ORDER BY n").fetchall()
        assert [p for p, _ in letters] == ["st2"] * 4 + ["st1"]
        assert "'st1' in the payload, 'st2' in the topic" in letters[0][1], letters[0]
        for _, reason in letters[1:4]:
            assert reason == f"id collision: {first['id']} stored already from station 'st1'" or \
                reason == f"id collision: {first['id'].upper()} stored already from station 'st1'", reason
        assert letters[4][1] == f"id collision: {first['id']} stored already from this station with other content"
        assert (consumer.stored, consumer.duplicates, consumer.collisions) == (1, 2, 4)

        # receipts: st1 for its check-in and both resends (each spelled as sent), st2 only for the
        # kept dead letter of its false claim; no receipt for a collision
        assert Subscriber.wait_for(lambda: len(watch.json_on("/receipt")) >= 4, 5)
        time.sleep(0.5)
        receipts = [(t.split("/")[-2], json.loads(p)["ids"]) for t, p, _ in watch.messages]
        assert sorted(receipts) == sorted([("st1", [first["id"]]), ("st1", [first["id"]]),
                                           ("st1", [first["id"].upper()]), ("st2", [claim["id"]])])

        said = [r.getMessage() for r in caplog.records if "collision" in r.getMessage()]
        assert len(said) == 4 and all(first["id"] in line.lower() for line in said), said
        assert ["st2" in line for line in said] == [True, True, True, False], said
        names = {e["card"]["name"] for _, e in sent}
        assert not any(name in r.getMessage() for r in caplog.records for name in names)   # no patient's name
    finally:
        watch.close()
        pub.close()
        consumer.stop()
        pg.stop()


@pytest.mark.parametrize("spelling,same", [("018F0000-0000-7000-8000-000000000005", True),
                                           ("018f0000-0000-7000-8000-0000-0000-0005", False)])
def test_an_id_is_compared_in_its_canonical_form(tmp_path, broker, spelling, same):
    """An id upper-cased is the same id (UUIDs are case-insensitive; stored lower-case). Other
    spellings the `uuid` format lets through (hyphens elsewhere, which PostgreSQL reads too) are
    dead letters: an id has one form, 8-4-4-4-12 hex digits."""
    pg = Postgres(tmp_path / "pg").start()
    consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="ids").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="ids-publisher")
    try:
        assert consumer.subscribed.wait(5)
        e = event(5, "st5", id=spelling)
        pub.client.publish(f"{PREFIX}/st5/checkin", json.dumps(e), qos=1).wait_for_publish(5)
        assert Subscriber.wait_for(lambda: consumer.stored + consumer.dead == 1, 10)
        with psycopg.connect(pg.dsn) as conn:
            stored = [r[0] for r in conn.execute("SELECT id::text FROM checkins")]
            reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters")]
        if same:
            assert stored == ["018f0000-0000-7000-8000-000000000005"] and reasons == []
        else:
            assert stored == [] and len(reasons) == 1 and "8-4-4-4-12" in reasons[0], reasons
    finally:
        pub.close()
        consumer.stop()
        pg.stop()
