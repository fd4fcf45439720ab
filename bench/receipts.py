"""The issue-17 scenario: a consumer with a persistent session is away while a station sends more
check-ins than the broker keeps for it (Mosquitto's default max_queued_messages, 1 000).

    .venv/bin/python bench/receipts.py [--n 1200] [--queue 1000] [--away 20] [--markdown]

For each `delivered_on` mode, one station (the real outbox and link) stores N check-ins while
the consumer is away for --away seconds, then the consumer comes back and stores what it gets,
sending a receipt for each (as examples/consumer does). Reports what the station counts as
delivered, what the consumer received (unique, and duplicates), what was lost, and the time from
the consumer's return until the station's queue was empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from agent.cards import read_card  # noqa: E402
from agent.config import MqttConfig  # noqa: E402
from agent.event import checkin_body  # noqa: E402
from agent.mqtt.link import MqttLink  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402
from support.broker import Broker  # noqa: E402


class Consumer:
    def __init__(self, port: int):
        self.port, self.got, self.lock = port, [], threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hospital-bench", protocol=MQTTProtocolVersion.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("hospital/checkin/+/checkin", qos=1)
        self.c.on_message = self._on_message

    def _on_message(self, c, u, msg) -> None:
        event_id = json.loads(msg.payload)["id"]
        with self.lock:
            self.got.append(event_id)
        c.publish(msg.topic.rsplit("/", 1)[0] + "/receipt", json.dumps({"ids": [event_id]}), qos=1)

    def up(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", self.port, clean_start=False, properties=props)
        self.c.loop_start()
        time.sleep(0.5)

    def down(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run(mode: str, n: int, queue: int, away: float, drain_s: float = 300.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"receipts-{mode}-"))
    broker = Broker(tmp / "broker", max_queued=queue).start()
    consumer = Consumer(broker.port)
    consumer.up()
    consumer.down()                                   # away, its session kept by the broker
    box = Outbox(tmp / "outbox.db", station="counter-01", max_events=100_000)
    link = MqttLink(MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True,
                               delivered_on=mode, receipt_timeout_s=5), "counter-01", box, backoff=(0.2, 2.0))
    link.start()
    rng = random.Random(n)
    ids = []
    t0 = time.monotonic()
    for i in range(n):
        ids.append(box.put(checkin_body(read_card(bhyt(rng) if i % 3 else cccd(rng)))).id)
        time.sleep(max(0.0, t0 + (i + 1) * away / n - time.monotonic()))
    while time.monotonic() - t0 < away:
        time.sleep(0.1)
    counted_while_away = box.stats().delivered_total
    back = time.monotonic()
    consumer.up()
    deadline = back + drain_s
    while time.monotonic() < deadline and box.depth():
        time.sleep(0.2)
    drained = time.monotonic() - back
    time.sleep(3)
    with consumer.lock:
        got = list(consumer.got)
    delivered = box.stats().delivered_total
    link.stop()
    consumer.down()
    box.close()
    broker.stop()
    return {"mode": mode, "n": n, "queue": queue, "counted_away": counted_while_away, "delivered": delivered,
            "unique": len(set(got) & set(ids)), "dups": len(got) - len(set(got)), "lost": len(set(ids) - set(got)),
            "drained": drained}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--queue", type=int, default=1000, help="the broker's max_queued_messages")
    ap.add_argument("--away", type=float, default=20.0, help="seconds the consumer is away")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print("| delivered_on | sent while the consumer was away | broker keeps | station counted delivered "
          "(while away / at the end) | consumer received (unique) | duplicates | lost | queue empty after |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("broker", "receipt"):
        r = run(mode, args.n, args.queue, args.away)
        print(f"| {mode} | {r['n']} | {r['queue']} | {r['counted_away']} / {r['delivered']} | {r['unique']} "
              f"| {r['dups']} | {r['lost']} | {r['drained']:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
