"""Reference consumer for hospital integrators: check-ins from the stations into PostgreSQL,
exactly once, and the hospital's verdict back to the station. Not part of the station.

    python examples/consumer/consumer.py --broker HOST:PORT --dsn "host=... dbname=..." \\
        [--prefix hospital/checkin] [--group his] [--name consumer-1] [--tls-ca CA] \\
        [--username hospital --password-file FILE]

- A shared subscription (`$share/GROUP/{prefix}/+/checkin`, MQTT 5): several instances split the
  load; a persistent session (clean start off, a week's expiry): nothing sent while it is down is
  lost (within the broker's queue limits).
- Every event is validated against the published schema (agent/schemas/checkin.json).
- One table keyed by the event id, `INSERT ... ON CONFLICT DO NOTHING`: the stations' at-least-once
  delivery becomes exactly-once storage. The message is acknowledged only after the commit
  (paho's manual acks): a consumer killed before its commit gets the message again.
- Malformed events go to a dead-letter table with the reason, never lost, never a crash.
- After the commit, a receipt `{"ids": [id]}` on `{prefix}/{station}/receipt` (QoS 1), for new
  check-ins and duplicates alike: stations with `delivered_on = "receipt"` count a check-in
  delivered only then, and send it again otherwise, whatever the broker dropped.
- A new check-in is checked by a pluggable `checker(event) -> (code, message)` (the national
  insurance portal needs the hospital's credentials: `rule_checker` is a stand-in) and the verdict
  is published on `{prefix}/{station}/verdict` (QoS 1, not retained), unless the check-in was
  read more than --verdict-max-age seconds ago (stations would not show it: the patient left).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import jsonschema
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("consumer")
SCHEMA = Path(__file__).resolve().parents[2] / "agent" / "schemas" / "checkin.json"
ACCEPTED = ("000", "001", "002", "003", "004")   # the portal's card-check codes hospitals accept

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
-- schema 1.1: the counter facts (a 1.0 event stores none); added to tables made before
ALTER TABLE checkins ADD COLUMN IF NOT EXISTS flags text[] NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS dead_letters (
    n           bigserial PRIMARY KEY,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    reason      text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now()
);
"""

Checker = Callable[[dict[str, Any]], tuple[str, str]]


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
                 username: str | None = None, password: str | None = None, verdict_max_age_s: float = 120.0):
        self.prefix, self.group, self.checker = prefix, group, checker
        self.verdict_max_age_s = verdict_max_age_s
        self.db = psycopg.connect(dsn, autocommit=False)
        with self.db.transaction():
            self.db.execute(DDL)
        self.validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text("utf-8")),
                                                         format_checker=jsonschema.FormatChecker())
        self.stored = self.duplicates = self.dead = 0
        self.connected = threading.Event()
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
        self.client.reconnect_delay_set(0.2, 5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 7 * 24 * 3600
        self.client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)

    def start(self) -> "Consumer":
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
        self.db.close()

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
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except psycopg.Error:
            log.exception("database error: message not acknowledged, the broker sends it again")
            self.db.rollback()
            return
        client.ack(msg.mid, msg.qos)   # only after the commit

    def handle(self, topic: str, payload: bytes) -> None:
        try:
            event = json.loads(payload.decode("utf-8"))
            problems = [e.message for e in self.validator.iter_errors(event)]
            if problems:
                raise ValueError(problems[0][:300])
        except (UnicodeDecodeError, ValueError) as exc:
            with self.db.transaction():
                self.db.execute("INSERT INTO dead_letters (topic, payload, reason) VALUES (%s, %s, %s)",
                                (topic, payload, str(exc)[:500]))
            self.dead += 1
            self._receipt(topic, event_id(payload))   # kept in dead_letters: the hospital has it
            return
        code, message = self.checker(event)
        with self.db.transaction():
            cur = self.db.execute(
                "INSERT INTO checkins (id, station, seq, read_at, kind, verdict, result_code, payload, flags) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (event["id"], event["station"], event["seq"], event["read_at"], event["kind"], event["verdict"],
                 code, json.dumps(event, ensure_ascii=False), list(event.get("flags", []))))
            new = cur.rowcount == 1
        self._receipt(topic, event["id"])
        if not new:
            self.duplicates += 1
            return
        self.stored += 1
        if self._late(event):
            return   # the patient has left the counter: the station would not show it
        verdict = {"id": event["id"], "result": "accepted" if code in ACCEPTED else "rejected", "code": code,
                   "message": message[:500]}
        self.client.publish(reply_topic(topic, "verdict"), json.dumps(verdict), qos=1)

    def _late(self, event: dict[str, Any]) -> bool:
        """Read longer ago than stations show verdicts for (judged only when the station's clock
        was synchronised; otherwise the station decides)."""
        read_at = datetime.fromisoformat(event["read_at"])
        return event["clock_synced"] and (datetime.now(timezone.utc) - read_at).total_seconds() > self.verdict_max_age_s

    def _receipt(self, topic: str, event_id: str | None) -> None:
        """Tell the station its check-in is stored."""
        if event_id and topic.endswith("/checkin"):
            self.client.publish(reply_topic(topic, "receipt"), json.dumps({"ids": [event_id]}), qos=1)


def reply_topic(checkin_topic: str, name: str) -> str:
    """{p}/{s}/checkin -> {p}/{s}/NAME: replies go to the station whose topic the message came on
    (the broker's ACL vouches for that), never to the payload's own `station` field."""
    return f"{checkin_topic.rsplit('/', 1)[0]}/{name}"


def event_id(payload: bytes) -> str | None:
    """The id of a malformed event, when it has a plausible one."""
    try:
        value = json.loads(payload.decode("utf-8")).get("id")
    except (UnicodeDecodeError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) == 36 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="HOST:PORT")
    ap.add_argument("--dsn", required=True, help="PostgreSQL connection string")
    ap.add_argument("--prefix", default="hospital/checkin")
    ap.add_argument("--group", default="his", help="shared-subscription group: instances of a group split the load")
    ap.add_argument("--name", default="consumer-1", help="this instance's name (its client id is hospital-NAME)")
    ap.add_argument("--tls-ca", help="CA of the broker's certificate (TLS)")
    ap.add_argument("--verdict-max-age", type=float, default=120.0,
                    help="no verdict for check-ins read longer ago than this (the stations' verdict_max_age_s)")
    ap.add_argument("--username", help="the consumers' broker user (examples/mosquitto/acl: hospital)")
    ap.add_argument("--password-file", help="a file holding that user's password (not on the command line, "
                                            "where every local user could read it)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.broker.rpartition(":")
    password = Path(args.password_file).read_text().strip() if args.password_file else None
    consumer = Consumer(host, int(port), args.dsn, prefix=args.prefix, group=args.group, name=args.name,
                        tls_ca=args.tls_ca, username=args.username, password=password,
                        verdict_max_age_s=args.verdict_max_age).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(5):
            log.info("stored %d, duplicates suppressed %d, dead letters %d",
                     consumer.stored, consumer.duplicates, consumer.dead)
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stored %d, duplicates suppressed %d, dead letters %d", consumer.stored, consumer.duplicates,
                 consumer.dead)
        consumer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
