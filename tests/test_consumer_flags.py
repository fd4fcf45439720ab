"""The reference consumer stores schema 1.1's `flags` in a column of their own; a 1.0 event
(no flags) still validates and is stored with none."""

from __future__ import annotations

import json
import random

import psycopg
import pytest

from agent.cards import read_card
from agent.checkin import checkin_body
from agent.sim.payloads import bhyt
from examples.consumer.consumer import Consumer
from support.broker import Subscriber
from support.postgres import Postgres, consumer_waits_behind

pytestmark = pytest.mark.slow   # a PostgreSQL cluster of its own


def test_flags_stored_and_old_events_still_accepted(tmp_path, broker):
    pg = Postgres(tmp_path / "pg").start()
    consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="flags").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="station-flags")
    try:
        assert consumer.subscribed.wait(5)
        topic = "hospital/checkin/counter-x/checkin"
        new = {"schema": "1.1", "id": "018f0000-0000-7000-8000-0000000000f1", "seq": 1, "station": "counter-x",
               **checkin_body(read_card(bhyt(random.Random(1))), synced=True,
                              flags=["priority_elderly", "repeat_today"])}
        old = {"schema": "1.0", "id": "018f0000-0000-7000-8000-0000000000f2", "seq": 2, "station": "counter-x",
               **checkin_body(read_card(bhyt(random.Random(2))), synced=True)}
        del old["flags"]
        for event in (new, old):
            pub.client.publish(topic, json.dumps(event), qos=1).wait_for_publish(5)

        def rows():
            with psycopg.connect(pg.dsn) as conn:
                return dict(conn.execute("SELECT seq, flags FROM checkins").fetchall())
        assert Subscriber.wait_for(lambda: len(rows()) == 2, 10), rows()
        assert rows() == {1: ["priority_elderly", "repeat_today"], 2: []}
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    finally:
        pub.close()
        consumer.stop()
        pg.stop()


def test_reconnecting_never_waits_for_a_lock_on_checkins_when_the_column_is_there(tmp_path):
    """The consumer runs its DDL at every database (re)connection: with the flags column already
    there it must not take ALTER TABLE's exclusive lock, which waits behind any open transaction
    on checkins (a HIS report) and holds up every other query of the table meanwhile."""
    pg = Postgres(tmp_path / "pg").start()
    try:
        Consumer("127.0.0.1", 9, pg.dsn, name="ddl-1").db.close()        # the tables, flags included
        # a report's open transaction
        assert not consumer_waits_behind(pg.dsn, "SELECT count(*) FROM checkins"), \
            "the consumer's DDL waited for a lock on checkins"
    finally:
        pg.stop()


def test_the_chip_of_a_1_2_event_is_stored_in_its_column(tmp_path, broker):
    """Schema 1.2's `chip` (issue 33) goes in a jsonb column; an event without one stores null."""
    from support.payloads import CCCD

    pg = Postgres(tmp_path / "pg").start()
    consumer = Consumer("127.0.0.1", broker.port, pg.dsn, name="chip").start()
    pub = Subscriber(broker.port, "nothing/#", client_id="station-chip")
    chip = {"verified": "chain", "clone_check": "active", "access": "pace-can", "reason": "", "mismatch": [],
            "fields": {"id_number": "079090001234", "name": "Nguyễn Văn An", "birth_date": "1990-01-01"}}
    try:
        assert consumer.subscribed.wait(5)
        topic = "hospital/checkin/counter-x/checkin"
        with_chip = {"schema": "1.2", "id": "018f0000-0000-7000-8000-0000000000c1", "seq": 1, "station": "counter-x",
                     **checkin_body(read_card(CCCD), synced=True, chip=chip)}
        without = {"schema": "1.1", "id": "018f0000-0000-7000-8000-0000000000c2", "seq": 2, "station": "counter-x",
                   **checkin_body(read_card(CCCD), synced=True)}
        for event in (with_chip, without):
            pub.client.publish(topic, json.dumps(event), qos=1).wait_for_publish(5)

        def rows():
            with psycopg.connect(pg.dsn) as conn:
                return dict(conn.execute("SELECT seq, chip FROM checkins").fetchall())
        assert Subscriber.wait_for(lambda: len(rows()) == 2, 10), rows()
        assert rows() == {1: chip, 2: None}
    finally:
        pub.close()
        consumer.stop()
        pg.stop()
