"""The reference consumer's dead letters are bounded (issue 32 item 4): per publisher (the station
its topic names, one catch-all for topics that name none) and in total, in letters and in bytes;
a payload over the kept size is truncated, its size and sha256 kept. Beyond a bound a dead letter
is only counted, and junk never stops good check-ins. Real Mosquitto, real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time

import psycopg
import pytest

from agent.cards import read_card
from agent.checkin import checkin_body
from agent.sim.payloads import cccd
from examples.consumer import consumer as reference
from examples.consumer.consumer import Consumer
from support.broker import Subscriber
from support.postgres import Postgres, consumer_waits_behind
from support.tmpfs import tmpfs

pytestmark = pytest.mark.slow   # a PostgreSQL cluster of its own
PREFIX = "hospital/checkin"


def event(n: int, station: str) -> dict:
    return {"schema": "1.0", "id": f"018f0000-0000-7000-8000-{n:012d}", "seq": n, "station": station,
            **checkin_body(read_card(cccd(random.Random(n))), synced=True)}


def rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_junk_cannot_fill_the_database_disk_and_good_check_ins_still_flow(tmp_path, broker):
    """The audit's run: 120 messages of 920 kB of junk from one station, PostgreSQL on a 96 MB disk
    (57 MB free). Before the fix each was kept whole: 110 MB, the disk full, and then no check-in
    of any station was stored. Now each keeps its first 64 kB, its size and sha256."""
    with tmpfs(tmp_path / "pgdisk", "size=96m,mode=0755", "a 96 MB disk for PostgreSQL") as disk:
        pg = Postgres(disk).start()
        consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="junk", db_backoff=(0.1, 1.0)).start()
        pub = Subscriber(broker.port, "nothing/#", client_id="junk-station")
        rng = random.Random(32)
        junk = [rng.randbytes(920_000) for _ in range(120)]
        try:
            assert consumer.subscribed.wait(5)
            started = time.monotonic()
            for payload in junk:
                pub.client.publish(f"{PREFIX}/counter-junk/checkin", payload, qos=1).wait_for_publish(10)
            good = [event(1, "counter-a"), event(2, "counter-junk")]
            for e in good:
                pub.client.publish(f"{PREFIX}/{e['station']}/checkin", json.dumps(e), qos=1).wait_for_publish(10)
            assert Subscriber.wait_for(lambda: consumer.stored == 2, 60), \
                (consumer.stored, consumer.dead, "good check-ins stuck behind the junk")
            took = time.monotonic() - started
            kept = rows(pg.dsn, "SELECT publisher, octet_length(payload), size, sha256, payload FROM dead_letters "
                                "ORDER BY n")
            assert len(kept) == 120 and consumer.dead == 120
            for (publisher, length, size, digest, payload), sent in zip(kept, junk):
                assert (publisher, length, size) == ("counter-junk", 65536, 920_000)
                assert bytes(digest) == hashlib.sha256(sent).digest() and bytes(payload) == sent[:65536]
            stored = rows(pg.dsn, "SELECT sum(octet_length(payload)) FROM dead_letters")[0][0]
            print(f"\nJUNK | 120 x 920 kB in {took:.1f} s | dead letters hold {stored / 2**20:.1f} MB |")
        finally:
            pub.close()
            consumer.stop()
            pg.stop()


def publish(pub: Subscriber, topic: str, payload: bytes) -> None:
    pub.client.publish(topic, payload, qos=1).wait_for_publish(5)


def test_dead_letters_beyond_their_bounds_are_counted_not_stored_and_receipted_only_when_kept(
        tmp_path, broker, caplog):
    """Small limits: 3 letters and 2500 bytes a publisher, 6 letters in all, 1000 bytes kept of
    each, drop counters for 2 publishers (the rest share one row). Dropped letters are counted per
    publisher, said in one log line (not one per letter), and get no receipt (the station keeps
    them); a message kept already is counted again on its row, not stored twice; good check-ins
    of the same stations are stored throughout."""
    caplog.set_level(logging.WARNING, logger="consumer")
    pg = Postgres(tmp_path / "pg").start()
    limits = reference.DeadLetterLimits(per_station=3, per_station_bytes=2500, total=6, total_bytes=10**6, keep_bytes=1000,
                              counter_rows=2)
    consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="bounds", dead_letters=limits).start()
    pub = Subscriber(broker.port, "nothing/#", client_id="bounds-station")
    watch = Subscriber(broker.port, f"{PREFIX}/+/receipt", client_id="hospital-watch")
    many = [json.dumps({"id": f"018f0000-0000-7000-8000-{n:012d}", "junk": n}).encode() for n in range(100, 105)]
    big = [bytes([n]) * 2000 for n in range(3)]
    try:
        assert consumer.subscribed.wait(5)
        for payload in many:                                     # 3 kept (the count), 2 dropped
            publish(pub, f"{PREFIX}/counter-many/checkin", payload)
        for payload in big:                                      # 1000 B kept of each: 2 kept (the bytes)
            publish(pub, f"{PREFIX}/counter-big/checkin", payload)
        publish(pub, f"{PREFIX}/bad station!/checkin", b"no station")   # the catch-all: kept (6 in all)
        publish(pub, f"{PREFIX}//checkin", b"no station either")        # over the total: dropped
        publish(pub, f"{PREFIX}/counter-many/checkin", many[0])         # kept already: a repeat
        good = [event(1, "counter-many"), event(2, "counter-big")]
        for e in good:
            publish(pub, f"{PREFIX}/{e['station']}/checkin", json.dumps(e).encode())
        assert Subscriber.wait_for(lambda: consumer.stored == 2, 15), (consumer.stored, consumer.dead)

        kept = rows(pg.dsn, "SELECT publisher, octet_length(payload), size, sha256, repeats FROM dead_letters "
                            "ORDER BY n")
        assert [(p, length, size, r) for p, length, size, _, r in kept] == [
            ("counter-many", len(many[0]), len(many[0]), 1), ("counter-many", len(many[1]), len(many[1]), 0),
            ("counter-many", len(many[2]), len(many[2]), 0),
            ("counter-big", 1000, 2000, 0), ("counter-big", 1000, 2000, 0), (reference.BAD_TOPIC, 10, 10, 0)]
        assert [bytes(d) for *_, d, _ in kept[3:5]] == [hashlib.sha256(p).digest() for p in big[:2]]
        drops = {p: (n, b) for p, n, b in rows(pg.dsn, "SELECT publisher, dropped, bytes FROM dead_letter_drops")}
        assert drops == {"counter-many": (2, len(many[3]) + len(many[4])), "counter-big": (1, 2000),
                         reference.OTHERS: (1, len(b"no station either"))}
        assert (consumer.dead, consumer.dropped) == (7, 4)       # the repeat counts as kept

        # receipts: for the kept letters with an id (and their repeat), and the good check-ins
        assert Subscriber.wait_for(lambda: len(watch.json_on("/receipt")) == 6, 5)
        time.sleep(0.5)
        receipted = [r["ids"][0] for r in watch.json_on("/receipt")]
        letter_ids = [json.loads(p)["id"] for p in many]
        assert sorted(receipted) == sorted([*letter_ids[:3], letter_ids[0], *(e["id"] for e in good)])

        dropped_lines = [r for r in caplog.records if "dead_letter_drops" in r.getMessage()]
        assert len(dropped_lines) == 1, [r.getMessage() for r in dropped_lines]
    finally:
        watch.close()
        pub.close()
        consumer.stop()
        pg.stop()
    summed = [r.getMessage() for r in caplog.records if "more dead letters dropped" in r.getMessage()]
    assert summed and "3 more" in summed[-1], summed             # the rest, summed up at the latest at stop


OLD_DEAD_LETTERS = """
CREATE TABLE dead_letters (
    n           bigserial PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO dead_letters (topic, payload, reason) VALUES
    ('hospital/checkin/counter-old/checkin', '\\x6a756e6b', 'old junk'),
    ('hospital/checkin/bad station!/checkin', '\\x6e6f', 'old junk');
"""


def test_an_old_dead_letter_table_gets_its_new_columns_once_and_never_waits_for_a_lock(tmp_path):
    """A dead_letters table made by an earlier consumer gets publisher, size, sha256 and repeats,
    filled in for its rows; at every later (re)connection the consumer's DDL takes no lock that
    waits behind a HIS transaction writing to dead_letters or checkins (ALTER TABLE or CREATE
    INDEX would)."""
    pg = Postgres(tmp_path / "pg").start()
    try:
        with psycopg.connect(pg.dsn) as conn:
            conn.execute(OLD_DEAD_LETTERS)
        Consumer("127.0.0.1", 9, pg.dsn, name="ddl-1").db.close()
        assert rows(pg.dsn, "SELECT publisher, size, encode(sha256, 'hex'), repeats FROM dead_letters ORDER BY n") == [
            ("counter-old", 4, hashlib.sha256(b"junk").hexdigest(), 0), (reference.BAD_TOPIC, 2, hashlib.sha256(b"no").hexdigest(), 0)]
        # a HIS clean-up, open
        assert not consumer_waits_behind(pg.dsn, "LOCK TABLE dead_letters, checkins IN ROW EXCLUSIVE MODE"), \
            "the consumer's DDL waited for a lock on dead_letters or checkins"
    finally:
        pg.stop()
