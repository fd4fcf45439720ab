"""Reference consumer for hospital integrators: check-ins from the stations into PostgreSQL,
exactly once, and the hospital's verdict back to the station. Not part of the station.

    python examples/consumer/consumer.py --broker HOST:PORT --dsn "host=... dbname=..." \\
        [--prefix hospital/checkin] [--group his] [--name consumer-1] [--tls-ca CA] \\
        [--username hospital --password-file FILE] [--leave-on-stop] [--dead-letters-per-station 1000 ...]

- A shared subscription (`$share/GROUP/{prefix}/+/checkin`, MQTT 5): several instances split the
  load; a persistent session (clean start off, a week's expiry): nothing sent while it is down is
  lost (within the broker's queue limits). Mosquitto gives a group's messages to every member
  with a session, connected or not: a stopped instance holds its share until it is back (run it
  under systemd, Restart=always), unless it was stopped with --leave-on-stop (it unsubscribes,
  stores what it holds, then ends its session: the others take every check-in).
- Every event is validated against the published schema (agent/schemas/checkin.json).
- The topic names the station (the broker's ACL vouches for it): a check-in whose `station` is
  another is a dead letter, never stored as that station's.
- One table keyed by the event id, `INSERT ... ON CONFLICT DO NOTHING`: the stations' at-least-once
  delivery becomes exactly-once storage. An id seen again (compared as a UUID: case does not
  matter) is a duplicate only from the same station with the same content; else it is a
  collision: dead-lettered with the reason, logged, and never receipted. Schema 1.1's `flags` go
  in a `text[]` column of their own (empty for a 1.0 event; added to a table made before), schema
  1.2's `chip` in a `jsonb` column (null without one; added the same way). The
  message is acknowledged only after the commit (paho's manual acks): a consumer killed before
  its commit gets the message again.
- Malformed events go to a dead-letter table with the reason, never lost, never a crash: those
  that fail the schema (formats included: `pip install 'scanner-agent[consumer]'` brings the
  date-time checker), are larger than 64 kB or nest deeper than 16 (both checked before parsing),
  or that PostgreSQL refuses for what they hold (a NUL, a number or date out of range). They are
  acknowledged: a poison message never holds one of the broker's in-flight slots.
- Dead letters are bounded, so that junk can never fill the database's disk: per publisher (the
  station the topic names; one catch-all, "(bad topic)", for topics that name none) and in total,
  in letters and in kept bytes; a payload keeps its first 64 kB, its size and sha256 always. The
  same message again from the same publisher is counted on its row (`repeats`). Beyond a bound a
  dead letter is only counted in `dead_letter_drops` (a row per publisher) and logged (a line a
  minute at most); check-ins go on being stored.
- paho's network thread only hands messages to a database thread, so nothing can end it. A
  database outage is waited out: reconnect with back-off, the message tried again, none dropped.
- After the commit, a receipt `{"ids": [id]}` on `{prefix}/{station}/receipt` (QoS 1), for new
  check-ins, duplicates and kept dead letters (not for a collision or a dropped dead letter: the
  station keeps those and sends them again): stations with `delivered_on = "receipt"` count a
  check-in delivered only then, and send it again otherwise, whatever the broker dropped.
- A new check-in is checked by a pluggable `checker(event) -> (code, message)` (the national
  insurance portal needs the hospital's credentials: `rule_checker` is a stand-in) and the verdict
  is published on `{prefix}/{station}/verdict` (QoS 1, not retained), unless the check-in was
  read more than --verdict-max-age seconds ago (stations would not show it: the patient left).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import queue
import random
import re
import signal
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import jsonschema
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent import jsonbound   # the scanner-agent package: pip install 'scanner-agent[consumer]'
from agent.mqtt.messages import IgnoredNotices

log = logging.getLogger("consumer")
SCHEMA = Path(__file__).resolve().parents[2] / "agent" / "schemas" / "checkin.json"
MAX_EVENT_BYTES = 64 * 1024   # a check-in is about 1 kB; the schema caps its texts
MAX_PACKET_BYTES = 1024 * 1024   # advertised in CONNECT (MQTT 5 Maximum Packet Size)
MAX_NESTING = 16              # a check-in nests 3 deep (card.extra, problems[])
ACCEPTED = ("000", "001", "002", "003", "004")   # the portal's card-check codes hospitals accept
STATION = re.compile(r"[A-Za-z0-9_.-]{1,64}")    # checkin.json's `station` pattern, whole
UUID_TEXT = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
BAD_TOPIC = "(bad topic)"          # the publisher of a message whose topic names no station
OTHERS = "(other publishers)"      # drops of publishers beyond DeadLetterLimits.counter_rows
DEAD_LETTER_LOCK = 0x5CA77E7D      # pg_advisory_xact_lock keys: instances take turns at the bounds,
DDL_LOCK = 0x5CA77E7E              # and at the DDL (two adding the same index: one would fail)
FULL_RECHECK_S = 5.0               # a bound met is taken as met this long (what is stored not summed again)

DDL = """
CREATE TABLE IF NOT EXISTS checkins (
    id          uuid PRIMARY KEY,
    station     text NOT NULL,
    seq         bigint NOT NULL,
    read_at     timestamptz NOT NULL,
    kind        text NOT NULL,
    verdict     text NOT NULL,
    result_code text,
    payload     jsonb NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
-- schema 1.1: the counter facts (a 1.0 event stores none); added to tables made before. Only
-- when missing: ALTER TABLE takes its exclusive lock even when the column is there, and behind a
-- long report on checkins it would hold up every query of the table, at each (re)connection.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'checkins' AND column_name = 'flags') THEN
        ALTER TABLE checkins ADD COLUMN flags text[] NOT NULL DEFAULT '{}';
    END IF;
END $$;
-- schema 1.2: the CCCD chip's read (null for events without one), the same way
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'checkins' AND column_name = 'chip') THEN
        ALTER TABLE checkins ADD COLUMN chip jsonb;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS dead_letters (
    n           bigserial PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,       -- its first --dead-letter-keep-kb kB
    reason      text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
-- the publisher (the station the topic names, or '(bad topic)'), the payload's size and sha256
-- (kept even when the payload is cut), and how often the same message came again. Added to tables
-- made before, only when missing (as flags above: no exclusive lock at each connection), their
-- rows filled in then; the index the same way (CREATE INDEX IF NOT EXISTS takes its lock first).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                   AND table_name = 'dead_letters' AND column_name = 'sha256') THEN
        ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS publisher text, ADD COLUMN IF NOT EXISTS size bigint,
            ADD COLUMN IF NOT EXISTS sha256 bytea, ADD COLUMN IF NOT EXISTS repeats bigint NOT NULL DEFAULT 0,
            ADD COLUMN IF NOT EXISTS last_at timestamptz;
        UPDATE dead_letters SET publisher = coalesce(substring(topic FROM '/([A-Za-z0-9_.-]{1,64})/checkin$'),
                                                     '(bad topic)'),
                                size = octet_length(payload), sha256 = sha256(payload);
        ALTER TABLE dead_letters ALTER COLUMN publisher SET NOT NULL, ALTER COLUMN size SET NOT NULL,
            ALTER COLUMN sha256 SET NOT NULL;
    END IF;
    IF to_regclass('dead_letters_publisher') IS NULL THEN
        CREATE INDEX dead_letters_publisher ON dead_letters (publisher, sha256);
    END IF;
END $$;
-- what was not kept, beyond the bounds: counted, per publisher
CREATE TABLE IF NOT EXISTS dead_letter_drops (
    publisher   text PRIMARY KEY,
    dropped     bigint NOT NULL,
    bytes       bigint NOT NULL,      -- their sizes as sent
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    last_bound  text NOT NULL,        -- the bound the last one met
    last_reason text NOT NULL         -- why the last one was a dead letter
);
"""

Checker = Callable[[dict[str, Any]], tuple[str, str]]


@dataclass(frozen=True)
class DeadLetterLimits:
    """How much the dead letters may hold, so that junk cannot fill the database's disk (120
    messages of 1 MB once did, and then no check-in of any station was stored): letters and kept
    bytes per publisher and in total, and how much of a payload is kept. Beyond them a dead
    letter is only counted (dead_letter_drops): check-ins go on being stored."""
    per_station: int = 1000
    per_station_bytes: int = 16 * 2**20
    total: int = 10_000
    total_bytes: int = 128 * 2**20
    keep_bytes: int = MAX_EVENT_BYTES      # a check-in is never cut: a larger payload is refused anyway
    counter_rows: int = 1000               # publishers counted apart in dead_letter_drops; the rest, together

    def bound_met(self, letters: int, kept: int, all_letters: int, all_kept: int,
                  size: int) -> tuple[bool, str] | None:
        """The bound one more letter of `size` kept bytes would break, given what its publisher
        (`letters`, `kept` bytes) and everyone (`all_...`) has stored: (whether it is a bound of
        all publishers, its text); None when it fits."""
        if letters + 1 > self.per_station:
            return False, f"{self.per_station} letters of this publisher"
        if kept + size > self.per_station_bytes:
            return False, f"{self.per_station_bytes} bytes of this publisher"
        if all_letters + 1 > self.total:
            return True, f"{self.total} letters in all"
        if all_kept + size > self.total_bytes:
            return True, f"{self.total_bytes} bytes in all"
        return None


def rule_checker(event: dict[str, Any]) -> tuple[str, str]:
    """A stand-in for the portal's card check, from the station's own read."""
    verdict = event.get("verdict")
    if verdict == "expired":
        return "010", "card expired"
    if verdict != "ok":
        return "050", f"station verdict {verdict}"
    return "000", "card valid"


class Consumer:
    def __init__(self, host: str, port: int, dsn: str, *, prefix: str = "hospital/checkin", group: str = "his",
                 name: str = "consumer-1", checker: Checker = rule_checker, tls_ca: str | None = None,
                 username: str | None = None, password: str | None = None, verdict_max_age_s: float = 120.0,
                 db_backoff: tuple[float, float] = (0.5, 30.0), dead_letters: DeadLetterLimits = DeadLetterLimits(),
                 leave_on_stop: bool = False):
        self.prefix, self.group, self.checker = prefix, group, checker
        self.leave_on_stop = leave_on_stop
        self.limits = dead_letters
        self.verdict_max_age_s = verdict_max_age_s
        self.dsn, self.db_backoff = dsn, db_backoff
        self.db: psycopg.Connection | None = None
        self._connect_db()
        checker_ = jsonschema.FormatChecker()
        if "date-time" not in checker_.checkers:
            # jsonschema checks date-time only with its optional rfc3339-validator: without it a
            # read_at of "2025-13-45T99:00:00+07:00" would pass the schema
            raise RuntimeError("jsonschema cannot check date-time: pip install 'scanner-agent[consumer]' "
                               "(or rfc3339-validator)")
        self.validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text("utf-8")),
                                                         format_checker=checker_)
        self.stored = self.duplicates = self.dead = self.dropped = self.collisions = 0
        # dropped dead letters: a line a minute at most, the rest counted and summed up on a timer
        self._drops_said = IgnoredNotices(log_every_s=60.0)
        self._met: dict[str, tuple[float, tuple[bool, str]]] = {}   # publisher ("": all) -> (until, bound met)
        self.connected = threading.Event()
        self._inbox: queue.Queue = queue.Queue()   # bounded by the broker's in-flight window (unacked)
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="consumer-db", daemon=True)
        # a client id apart from every station id: the same id would kick a station off the broker
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hospital-{name}",
                                  protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()
        self._left = threading.Event()
        self.client.on_unsubscribe = lambda *_: self._left.set()
        self.client.reconnect_delay_set(0.2, 5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 24 * 3600
        # the broker drops (and logs) larger messages rather than send them: a consumer's memory is
        # not at the mercy of one client; smaller ones above MAX_EVENT_BYTES are dead-lettered
        props.MaximumPacketSize = MAX_PACKET_BYTES
        self.client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)

    def start(self) -> "Consumer":
        self._worker.start()
        self.client.loop_start()
        return self

    def stop(self) -> None:
        if self.leave_on_stop:
            self._leave()
        self._stopping.set()
        self._inbox.put(None)
        self.client.loop_stop()
        self.client.disconnect()
        if self._worker.is_alive():
            self._worker.join(10)
        if self.db is not None:
            self.db.close()
        self._sum_up(force=True)

    def counts(self) -> str:
        """What this instance did so far, for the log."""
        return (f"stored {self.stored}, duplicates suppressed {self.duplicates}, dead letters {self.dead} "
                f"({self.collisions} id collisions), dead letters dropped over their bounds {self.dropped}")

    def _connect_db(self) -> None:
        self.db = psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            self.db.execute(DDL)

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            log.error("broker refused the consumer: %s", rc)
            return
        client.subscribe(f"$share/{self.group}/{self.prefix}/+/checkin", qos=1)
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, props) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("subscription refused: %s (check the broker's ACL)", reason_codes)
            return
        log.info("subscribed to $share/%s/%s/+/checkin", self.group, self.prefix)
        self.subscribed.set()

    def _on_message(self, client, userdata, msg) -> None:
        """Runs on paho's network thread: only hands the message over. An exception here would end
        that thread, and the consumer would go on running without consuming anything."""
        try:
            self._inbox.put((msg.topic, bytes(msg.payload), msg.mid, msg.qos))
        except BaseException:  # noqa: BLE001 - never let anything reach paho's thread
            log.exception("could not queue a message (it is sent again on the next connection)")

    def _work(self) -> None:
        """The database thread: one message at a time, acknowledged once it is stored or
        dead-lettered. A database outage is waited out (reconnect with back-off); the message is
        then tried again, never dropped."""
        while True:
            try:
                item = self._inbox.get(timeout=5.0)
            except queue.Empty:
                self._sum_up()
                continue
            if item is None or self._stopping.is_set():
                return
            topic, payload, mid, qos = item
            try:
                if self._process(topic, payload):
                    self.client.ack(mid, qos)   # only after the commit
            except Exception:  # noqa: BLE001 - this thread must go on; the broker resends the message
                log.exception("message left unacknowledged")
            finally:
                self._inbox.task_done()

    def _leave(self, quiet_s: float = 1.0, timeout_s: float = 60.0) -> None:
        """Hand this instance's share of the group over before stopping: Mosquitto gives a shared
        subscription's messages to every member with a session, connected or not, so a stopped
        instance that kept its session would hold every other check-in until it came back. So:
        unsubscribe (no new ones come), store and acknowledge what the broker had already given
        it, until none came for `quiet_s`, then disconnect ending the session. Not when the broker
        is unreachable: then the session stays, and what it holds waits for this instance."""
        if not self.client.is_connected():
            log.warning("not connected: this instance's session stays, its check-ins wait for it")
            return
        self.client.unsubscribe(f"$share/{self.group}/{self.prefix}/+/checkin")
        if not self._left.wait(10):
            log.warning("the broker did not confirm the unsubscribe: this instance's session stays")
            return
        deadline, idle_since = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - idle_since < quiet_s:
            if self._inbox.unfinished_tasks:
                idle_since = time.monotonic()
            time.sleep(0.05)
        if self._inbox.unfinished_tasks:
            log.warning("messages still being stored after %.0f s: this instance's session stays", timeout_s)
            return
        props = Properties(PacketTypes.DISCONNECT)
        props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        log.info("left the group %s: the other instances take every check-in", self.group)

    def _process(self, topic: str, payload: bytes) -> bool:
        """True once the message is stored or dead-lettered; False only when stopping."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                if self.db is None or self.db.closed:
                    self._connect_db()
                    log.info("database connection restored")
                self.handle(topic, payload)
                return True
            except Exception as exc:  # noqa: BLE001 - sorted below: the database's fault, or the message's
                if self._rollback() and message_fault(exc) and self._dead_letter_safely(topic, payload, exc):
                    return True
                wait = min(self.db_backoff[1], self.db_backoff[0] * 2 ** min(attempt, 16)) * random.uniform(0.8, 1.2)
                attempt += 1
                log.warning("database unavailable (%s); message kept, retry %d in %.1f s",
                            one_line(exc), attempt, wait)
                self._close_db()
                self._stopping.wait(wait)
        return False

    def _rollback(self) -> bool:
        """Roll back a failed transaction: False when the connection itself is lost."""
        try:
            if self.db is None or self.db.closed or self.db.broken:
                return False
            self.db.rollback()
            self.db.execute("SELECT 1")
            self.db.rollback()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _close_db(self) -> None:
        try:
            if self.db is not None:
                self.db.close()
        except Exception:  # noqa: BLE001
            pass
        self.db = None

    def _dead_letter_safely(self, topic: str, payload: bytes, exc: Exception) -> bool:
        """Keep a message that cannot be stored, with the reason; False when even that failed."""
        try:
            self._dead_letter(topic, payload, f"database refused it: {one_line(exc)}"
                              if isinstance(exc, psycopg.Error) else f"consumer error: {one_line(exc)}")
            return True
        except Exception:  # noqa: BLE001 - not kept: not acknowledged, tried again
            log.exception("could not dead-letter a message; it stays unacknowledged")
            return False

    def _dead_letter(self, topic: str, payload: bytes, reason: str, *, receipt: bool = True) -> str:
        """Keep a message that is no check-in, within the bounds; a receipt once it is kept (the
        hospital has it), unless `receipt` is False. Beyond a bound it is only counted, and gets no
        receipt: a station keeps it and sends it again. Returns keep_dead_letter's outcome."""
        publisher = topic_station(topic, self.prefix) or BAD_TOPIC
        now = time.monotonic()
        met = next((bound for until, bound in (self._met.get(key, (0.0, None)) for key in ("", publisher))
                    if until > now), None)
        with self.db.transaction():
            outcome, bound = keep_dead_letter(self.db, self.limits, topic, publisher, payload, reason[:500], met)
        if outcome == "dropped":
            if met is None:   # taken as met a while: what is stored is not summed up for every letter
                if len(self._met) > self.limits.counter_rows:
                    self._met.clear()
                self._met["" if bound[0] else publisher] = (now + FULL_RECHECK_S, bound)
            self.dropped += 1
            count = self._drops_said.log_now(publisher)
            if count is not None:   # not the reason: a schema error may quote a patient's name
                log.warning("dead letter from %s dropped, over its bound of %s: counted in dead_letter_drops "
                            "(%d dropped since the last such line)", publisher, bound[1], count)
            return outcome
        self.dead += 1
        if receipt:
            self._receipt(topic, event_id(payload))
        return outcome

    def _sum_up(self, force: bool = False) -> None:
        """The dropped dead letters not logged one by one (a line a minute at most), on a timer."""
        if (summary := self._drops_said.summary(force)) is not None:
            log.warning("%d more dead letters dropped in the last %.0f s (the last from %s): see dead_letter_drops",
                        *summary)

    def handle(self, topic: str, payload: bytes) -> None:
        station = topic_station(topic, self.prefix)
        try:
            event = parse_bounded(payload)
            problems = [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                        for e in self.validator.iter_errors(event)]
            if problems:
                raise ValueError(problems[0][:300])
            if station != event["station"]:
                # the broker's ACL vouches for the topic, nothing for the payload
                raise ValueError(f"station {event['station']!r} in the payload, "
                                 + (f"{station!r} in the topic" if station else "a topic that names no station"))
            uid = canonical_id(event["id"])
        except (UnicodeDecodeError, ValueError) as exc:
            self._dead_letter(topic, payload, one_line(exc))
            return
        text = json.dumps(event, ensure_ascii=False)
        with self.db.transaction():
            seen = self._seen(uid, station, text)
        if seen is None:
            code, message = self.checker(event)
            with self.db.transaction():
                cur = self.db.execute(
                    "INSERT INTO checkins (id, station, seq, read_at, kind, verdict, result_code, payload, flags, chip) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                    (uid, station, event["seq"], event["read_at"], event["kind"], event["verdict"],
                     code, text, list(event.get("flags", [])),
                     json.dumps(event["chip"], ensure_ascii=False) if "chip" in event else None))
                if cur.rowcount != 1:                      # another instance stored it meanwhile
                    seen = self._seen(uid, station, text)
        if seen is not None and seen != "duplicate":
            self._collision(topic, payload, station, event["id"], seen)
            return
        self._receipt(topic, event["id"])              # the id as the station spelled it
        if seen == "duplicate":
            self.duplicates += 1
            return
        self.stored += 1
        if self._late(event):
            return   # the patient has left the counter: the station would not show it
        verdict = {"id": event["id"], "result": "accepted" if code in ACCEPTED else "rejected", "code": code,
                   "message": str(message)[:500]}
        self.client.publish(reply_topic(topic, "verdict"), json.dumps(verdict), qos=1)

    def _seen(self, uid: str, station: str, text: str) -> str | None:
        """None for an id not stored yet; "duplicate" when stored from this station with this
        content (the id's spelling aside); else why it is a collision."""
        row = self.db.execute("SELECT station, (payload - 'id') = (%s::jsonb - 'id') FROM checkins WHERE id = %s",
                              (text, uid)).fetchone()
        if row is None:
            return None
        if row[0] != station:
            return f"stored already from station {row[0]!r}"
        return "duplicate" if row[1] else "stored already from this station with other content"

    def _collision(self, topic: str, payload: bytes, station: str, event_id: str, why: str) -> None:
        """An id reused for another check-in: kept aside, said, and not receipted (the station keeps
        its check-in, and a person can see which of the two is right). Said once per dead letter
        kept: a resend is counted on its row, and the bounds bound the lines too."""
        self.collisions += 1
        if self._dead_letter(topic, payload, f"id collision: {event_id} {why}", receipt=False) == "new":
            log.warning("id collision: %s from station %s, %s: dead-lettered, no receipt", event_id, station, why)

    def _late(self, event: dict[str, Any]) -> bool:
        """Read longer ago than stations show verdicts for (judged only when the station's clock
        was synchronised; otherwise the station decides). A read_at Python cannot read: late."""
        try:
            read_at = datetime.fromisoformat(event["read_at"])
            age = (datetime.now(timezone.utc) - read_at).total_seconds()
        except (TypeError, ValueError, OverflowError):
            return True
        return event["clock_synced"] and age > self.verdict_max_age_s

    def _receipt(self, topic: str, event_id: str | None) -> None:
        """Tell the station its check-in is stored."""
        if event_id and topic.endswith("/checkin"):
            self.client.publish(reply_topic(topic, "receipt"), json.dumps({"ids": [event_id]}), qos=1)


def message_fault(exc: BaseException) -> bool:
    """Whether a failure comes from the message itself, so that trying again cannot help: it fails
    the schema, or PostgreSQL refuses its data (class 22: a NUL in a text, a number or a date out of
    range; 23: a constraint; 54: a limit), or the checker raised on it. Not: the connection, a full
    disk, a shutdown (classes 08, 53, 57, 58), which are waited out."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)) or state[:2] in ("22", "23", "54")
    return True   # not the database's: the message made the code fail (the connection is checked first)


def one_line(value: Any, limit: int = 300) -> str:
    """An exception or text as one printable line, capped (reasons are stored and logged)."""
    text = value if isinstance(value, str) else f"{type(value).__name__}: {value}"
    text = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(text.split())[:limit]


def parse_bounded(payload: bytes) -> Any:
    """The JSON of a message, with its size and nesting bounded before parsing (ValueError)."""
    if len(payload) > MAX_EVENT_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than a check-in can be ({MAX_EVENT_BYTES} bytes)")
    return jsonbound.loads(payload, max_bytes=MAX_EVENT_BYTES, max_depth=MAX_NESTING)


def topic_station(topic: str, prefix: str) -> str | None:
    """The station a `{prefix}/{station}/checkin` topic names; None when it names none (a level
    that is no station id: empty, too long, spaces...)."""
    head, tail = f"{prefix}/", "/checkin"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    station = topic[len(head):-len(tail)]
    return station if STATION.fullmatch(station) else None


def canonical_id(value: str) -> str:
    """An event id as it is compared and stored: a UUID, lower case (RFC 9562: read whatever the
    case). Other spellings Python and PostgreSQL would read (hyphens elsewhere, braces) are
    refused (ValueError): an id has one form."""
    if not UUID_TEXT.fullmatch(value):
        raise ValueError(f"id: {one_line(value, 60)!r} is not a UUID of 8-4-4-4-12 hex digits")
    return str(uuid.UUID(value))


USAGE = """SELECT count(*) FILTER (WHERE publisher = %(p)s),
                  coalesce(sum(octet_length(payload)) FILTER (WHERE publisher = %(p)s), 0),
                  count(*), coalesce(sum(octet_length(payload)), 0) FROM dead_letters"""   # the bounds' figures


def keep_dead_letter(db: psycopg.Connection, limits: DeadLetterLimits, topic: str, publisher: str, payload: bytes,
                     reason: str, met: tuple[bool, str] | None = None) -> tuple[str, tuple[bool, str] | None]:
    """Store a dead letter, in the caller's transaction: its first limits.keep_bytes, its size and
    sha256. ("new", None) when stored; ("repeat", None) for the same message again from the same
    publisher, counted on its row; ("dropped", bound) beyond a bound (DeadLetterLimits.bound_met):
    counted in dead_letter_drops instead (a row per publisher, up to limits.counter_rows
    publishers; the others share one). `met`: a bound known to be met (what is stored not summed
    up again: a flood is dropped at the cost of one index look-up and one counter update each)."""
    digest = hashlib.sha256(payload).digest()
    kept = payload[:limits.keep_bytes]
    db.execute("SELECT pg_advisory_xact_lock(%s)", (DEAD_LETTER_LOCK,))   # instances in turn: bounds hold
    again = db.execute("UPDATE dead_letters SET repeats = repeats + 1, last_at = now() WHERE n = "
                       "(SELECT min(n) FROM dead_letters WHERE publisher = %s AND sha256 = %s)", (publisher, digest))
    if again.rowcount:
        return "repeat", None
    bound = met or limits.bound_met(*db.execute(USAGE, {"p": publisher}).fetchone(), len(kept))
    if bound is None:
        db.execute("INSERT INTO dead_letters (topic, payload, reason, publisher, size, sha256) "
                   "VALUES (%s, %s, %s, %s, %s, %s)", (topic, kept, reason, publisher, len(payload), digest))
        return "new", None
    counted, rows = db.execute("SELECT count(*) FILTER (WHERE publisher = %s), count(*) FROM dead_letter_drops",
                               (publisher,)).fetchone()
    db.execute("INSERT INTO dead_letter_drops (publisher, dropped, bytes, last_bound, last_reason) "
               "VALUES (%s, 1, %s, %s, %s) ON CONFLICT (publisher) DO UPDATE SET "
               "dropped = dead_letter_drops.dropped + 1, bytes = dead_letter_drops.bytes + excluded.bytes, "
               "last_at = now(), last_bound = excluded.last_bound, last_reason = excluded.last_reason",
               (publisher if counted or rows < limits.counter_rows else OTHERS, len(payload), bound[1], reason))
    return "dropped", bound


def reply_topic(checkin_topic: str, name: str) -> str:
    """{p}/{s}/checkin -> {p}/{s}/NAME: replies go to the station whose topic the message came on
    (the broker's ACL vouches for that), never to the payload's own `station` field."""
    return f"{checkin_topic.rsplit('/', 1)[0]}/{name}"


def event_id(payload: bytes) -> str | None:
    """The id of a malformed event, when it has a plausible one."""
    try:
        value = parse_bounded(payload).get("id")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) == 36 else None


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="HOST:PORT")
    ap.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    ap.add_argument("--prefix", default="hospital/checkin")
    ap.add_argument("--group", default="his", help="shared-subscription group: instances of a group split the load")
    ap.add_argument("--name", default="consumer-1", help="this instance's name (its client id is hospital-NAME)")
    ap.add_argument("--leave-on-stop", action="store_true",
                    help="on SIGTERM, hand this instance's share to the group's others (unsubscribe, store what it "
                         "holds, end its session): only with another instance running, or the check-ins sent "
                         "while it is stopped find no subscriber (receipt mode sends them again)")
    ap.add_argument("--tls-ca", help="CA of the broker's certificate (TLS)")
    ap.add_argument("--verdict-max-age", type=float, default=120.0,
                    help="no verdict for check-ins read longer ago than this (the stations' verdict_max_age_s)")
    ap.add_argument("--username", help="the consumers' broker user (examples/mosquitto/acl: hospital)")
    ap.add_argument("--password-file", help="a file holding that user's password (not on the command line, "
                                            "where every local user could read it)")
    bounds = DeadLetterLimits()
    dl = ap.add_argument_group("dead-letter bounds", "beyond them a dead letter is only counted, in dead_letter_drops "
                                                     "(a row per publisher), and gets no receipt")
    dl.add_argument("--dead-letters-per-station", type=positive, default=bounds.per_station, metavar="N",
                    help="letters kept per publisher: the station its topic names, or '(bad topic)' "
                         "(default %(default)s)")
    dl.add_argument("--dead-letter-mb-per-station", type=positive, default=bounds.per_station_bytes >> 20,
                    metavar="MB", help="kept bytes per publisher (default %(default)s MB)")
    dl.add_argument("--dead-letters-total", type=positive, default=bounds.total, metavar="N",
                    help="letters kept in all (default %(default)s)")
    dl.add_argument("--dead-letter-mb-total", type=positive, default=bounds.total_bytes >> 20, metavar="MB",
                    help="kept bytes in all (default %(default)s MB)")
    dl.add_argument("--dead-letter-keep-kb", type=positive, default=bounds.keep_bytes >> 10, metavar="KB",
                    help="the first KB kept of a larger payload; its size and sha256 always (default %(default)s kB)")
    args = ap.parse_args()
    limits = DeadLetterLimits(per_station=args.dead_letters_per_station,
                              per_station_bytes=args.dead_letter_mb_per_station << 20,
                              total=args.dead_letters_total, total_bytes=args.dead_letter_mb_total << 20,
                              keep_bytes=args.dead_letter_keep_kb << 10)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.broker.rpartition(":")
    password = Path(args.password_file).read_text().strip() if args.password_file else None
    consumer = Consumer(host, int(port), args.dsn, prefix=args.prefix, group=args.group, name=args.name,
                        tls_ca=args.tls_ca, username=args.username, password=password,
                        verdict_max_age_s=args.verdict_max_age, dead_letters=limits,
                        leave_on_stop=args.leave_on_stop).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(5):
            log.info("%s", consumer.counts())
    except KeyboardInterrupt:
        pass
    finally:
        log.info("%s", consumer.counts())
        consumer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
