"""The hospital side under load, through a consumer kill and a hub restart (issue 34).

    .venv/bin/python bench/hospital.py [--stations 2000] [--rate 333] [--duration 300] [--markdown]

Everything on loopback, from the guide's samples: the hub (examples/mosquitto/mosquitto.conf:
TLS, passwords, ACL), a second site's broker bridged to it (examples/mosquitto/bridge.conf),
PostgreSQL, and two reference consumers (examples/consumer/consumer.py, processes) sharing
`$share/his/...` on the hub. One asyncio load generator simulates the stations, half on each
broker: each its own client id, user and topics, MQTT 5 with a kept session, QoS 1, waiting for
its receipts and verdicts; like a station with `delivered_on = "receipt"`, it sends a check-in
again when no receipt came within --receipt-timeout s (doubling, up to 8x). At --kill (a share of
the run) one consumer is SIGKILLed, and started again --down s later; at --restart the hub is
restarted (SIGTERM, as systemd does; it saves its sessions and queues).

Then it counts: the ids sent against the rows in PostgreSQL (none missing, none twice, none
unexpected, no dead letter), a receipt for every id and a verdict for every check-in stored
within the consumers' --verdict-max-age, and the end-to-end latency (first publish to first
receipt, as the station's monotonic clock sees it).

The stations' clients are paho-mqtt's (the stations' own library), driven by one asyncio loop
through paho's socket callbacks (on_socket_open / register_write ...), as paho's asyncio example
and aiomqtt do: no other MQTT library, no thread per station.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from agent.cards import read_card  # noqa: E402
from agent.event import checkin_body, envelope, now_iso  # noqa: E402
from agent.mqtt.session import connect_properties  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402
from support.broker import SampleBroker  # noqa: E402
from support.postgres import Postgres  # noqa: E402

PREFIX = "hospital/checkin"
NO_SUBSCRIBERS = 16   # MQTT 5 PUBACK reason: the broker had no subscriber for it (and dropped it)


@dataclass
class Plan:
    stations: int = 2000
    rate: float = 333.0            # check-ins per second, all stations together
    duration: float = 300.0        # seconds of sending
    kill: float = 0.3              # share of the run at which a consumer is SIGKILLed
    down: float = 5.0              # seconds it stays down
    restart: float = 0.6           # share of the run at which the hub is restarted
    receipt_timeout: float = 60.0  # the stations' receipt_timeout_s
    verdict_max_age: float = 120.0
    drain: float = 400.0           # the longest wait for the last receipts after the run
    folder: Path | None = None


@dataclass
class Tally:
    sent: dict = field(default_factory=dict)        # id -> (station, first publish, payload)
    receipts: dict = field(default_factory=dict)    # id -> first receipt (monotonic)
    receipt_copies: int = 0
    verdicts: dict = field(default_factory=dict)    # id -> copies
    resends: int = 0
    no_subscribers: int = 0                          # PUBACKs saying the hub dropped it
    foreign: int = 0                                 # answers naming ids this run never sent
    send_lag: float = 0.0                            # the generator behind its schedule, at most
    reconnects: int = 0


class SimStation:
    """One station's MQTT client, driven by the asyncio loop."""

    def __init__(self, name: str, broker: SampleBroker, tally: Tally, loop: asyncio.AbstractEventLoop):
        self.name, self.broker, self.tally, self.loop = name, broker, tally, loop
        self.seq = 0
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        c.tls_set_context(broker_context(broker))
        c.username_pw_set(name, broker.passwords[name])
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_open = lambda c_, u, sock: loop.add_reader(sock, self._read)
        c.on_socket_close = lambda c_, u, sock: (loop.remove_reader(sock), loop.remove_writer(sock))
        c.on_socket_register_write = lambda c_, u, sock: loop.add_writer(sock, c.loop_write)
        c.on_socket_unregister_write = lambda c_, u, sock: loop.remove_writer(sock)
        c.max_inflight_messages_set(20)
        self.connected_once = False

    def _read(self) -> None:
        self.client.loop_read()
        sock = self.client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending():   # TLS may hold whole packets already read
            self.client.loop_read()
            sock = self.client.socket()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            return
        if self.connected_once:
            self.tally.reconnects += 1
        self.connected_once = True
        client.subscribe([(f"{PREFIX}/{self.name}/receipt", 1), (f"{PREFIX}/{self.name}/verdict", 1)])

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        if rc.value == NO_SUBSCRIBERS:
            self.tally.no_subscribers += 1

    def _on_message(self, client, userdata, msg) -> None:
        now = time.monotonic()
        body = json.loads(msg.payload)
        if msg.topic.endswith("/receipt"):
            for i in body["ids"]:
                if i not in self.tally.sent:
                    self.tally.foreign += 1
                elif i in self.tally.receipts:
                    self.tally.receipt_copies += 1
                else:
                    self.tally.receipts[i] = now
        elif body["id"] in self.tally.sent:
            self.tally.verdicts[body["id"]] = self.tally.verdicts.get(body["id"], 0) + 1
        else:
            self.tally.foreign += 1

    async def keep_connected(self) -> None:
        """paho's loop_misc (keepalive, retries) each second; a lost connection made again after
        a random 0.5-3 s, as stations back off."""
        while True:
            if self.client.socket() is None:
                try:
                    if self.connected_once:
                        self.client.reconnect()
                    else:
                        self.client.connect("127.0.0.1", self.broker.port, keepalive=30, clean_start=False,
                                            properties=connect_properties())
                except OSError:
                    await asyncio.sleep(random.uniform(0.5, 3.0))
                    continue
            if self.client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                await asyncio.sleep(random.uniform(0.5, 3.0))
                continue
            await asyncio.sleep(1.0)

    def publish(self, event_id: str, payload: bytes) -> None:
        self.client.publish(f"{PREFIX}/{self.name}/checkin", payload, qos=1)


_contexts: dict[int, ssl.SSLContext] = {}


def broker_context(broker: SampleBroker) -> ssl.SSLContext:
    """One TLS context per broker for all its stations (one each would load the CA 2,000 times)."""
    if broker.port not in _contexts:
        _contexts[broker.port] = ssl.create_default_context(cafile=str(broker.ca["ca"]))
    return _contexts[broker.port]


def bodies(n: int = 64) -> list[dict]:
    """Check-in bodies of real card formats (BHYT and CCCD, agent/sim), reused with fresh ids."""
    rng = random.Random(34)
    return [checkin_body(read_card(bhyt(rng) if i % 3 else cccd(rng)), synced=True) for i in range(n)]


class Consumers:
    """The reference consumers as processes of their own (a SIGKILL is a real one)."""

    def __init__(self, folder: Path, hub: SampleBroker, dsn: str, plan: Plan, n: int = 2):
        pw = folder / "hospital.password"
        pw.write_text(hub.passwords["hospital"])
        pw.chmod(0o600)
        self.folder, self.procs = folder, []
        self.args = [[sys.executable, str(ROOT / "examples" / "consumer" / "consumer.py"),
                      "--broker", f"127.0.0.1:{hub.port}", "--dsn", dsn, "--name", f"c{k + 1}",
                      "--tls-ca", str(hub.ca["ca"]), "--username", "hospital", "--password-file", str(pw),
                      "--verdict-max-age", str(plan.verdict_max_age)] for k in range(n)]
        self.procs = [self._start(k) for k in range(n)]

    def _start(self, k: int) -> subprocess.Popen:
        log = open(self.folder / f"consumer-c{k + 1}.log", "a")
        return subprocess.Popen(self.args[k], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    def kill(self, k: int) -> None:
        self.procs[k].send_signal(signal.SIGKILL)
        self.procs[k].wait(10)

    def start(self, k: int) -> None:
        self.procs[k] = self._start(k)

    def subscribed(self) -> int:
        return sum((self.folder / f"consumer-c{k + 1}.log").read_text().count("subscribed to $share")
                   for k in range(len(self.procs)))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def wait_until(predicate, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def drive(plan: Plan, hub: SampleBroker, site: SampleBroker, consumers: Consumers, tally: Tally,
                events: list[str]) -> None:
    loop = asyncio.get_running_loop()
    names = [f"{'site2' if k % 2 else 'hub'}-{k:04d}" for k in range(plan.stations)]
    stations = [SimStation(n, site if n.startswith("site2") else hub, tally, loop) for n in names]
    keepers = []
    for s in stations:                              # connect in small steps: TLS handshakes block
        keepers.append(loop.create_task(s.keep_connected()))
        await asyncio.sleep(0)
    if not await wait_until(lambda: all(s.client.is_connected() for s in stations), 120, 0.5):
        raise RuntimeError(f"{sum(not s.client.is_connected() for s in stations)} stations did not connect")
    events.append(f"{plan.stations} stations connected")
    pool = bodies()
    pending: dict[str, tuple[float, float]] = {}    # id -> (next resend, interval)
    by_name = {s.name: s for s in stations}

    async def resend_loop() -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for i, (due, every) in list(pending.items()):
                if i in tally.receipts:
                    del pending[i]
                elif now >= due:
                    station, _, payload = tally.sent[i]
                    by_name[station].publish(i, payload)
                    tally.resends += 1
                    every = min(every * 2, plan.receipt_timeout * 8)
                    pending[i] = (now + every, every)

    async def faults(t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + plan.kill * plan.duration - time.monotonic()))
        consumers.kill(0)
        events.append(f"{time.monotonic() - t0:.0f} s: consumer c1 SIGKILLed")
        await asyncio.sleep(plan.down)
        consumers.start(0)
        events.append(f"{time.monotonic() - t0:.0f} s: consumer c1 started again")
        await asyncio.sleep(max(0.0, t0 + plan.restart * plan.duration - time.monotonic()))
        await asyncio.to_thread(hub.stop)
        events.append(f"{time.monotonic() - t0:.0f} s: hub stopped (SIGTERM)")
        await asyncio.to_thread(hub.start)
        events.append(f"{time.monotonic() - t0:.0f} s: hub started again")

    resender = loop.create_task(resend_loop())
    t0 = time.monotonic()
    fault_task = loop.create_task(faults(t0))
    total = int(plan.rate * plan.duration)
    for k in range(total):
        due = t0 + k / plan.rate
        lag = time.monotonic() - due
        if lag < 0:
            await asyncio.sleep(-lag)
        else:
            tally.send_lag = max(tally.send_lag, lag)
            if k % 32 == 0:
                await asyncio.sleep(0)              # let the answers in
        s = stations[k % plan.stations]
        s.seq += 1
        event_id = str(uuid.uuid4())
        payload = json.dumps(envelope({**pool[k % len(pool)], "read_at": now_iso()}, event_id=event_id, seq=s.seq,
                                      station=s.name), ensure_ascii=False).encode()
        now = time.monotonic()
        tally.sent[event_id] = (s.name, now, payload)
        pending[event_id] = (now + plan.receipt_timeout, plan.receipt_timeout)
        s.publish(event_id, payload)
    events.append(f"{time.monotonic() - t0:.0f} s: {total} check-ins sent")
    await fault_task
    await wait_until(lambda: len(tally.receipts) == len(tally.sent), plan.drain, 0.5)
    events.append(f"{time.monotonic() - t0:.0f} s: receipts for {len(tally.receipts)} of {len(tally.sent)}")
    await asyncio.sleep(3)                          # the verdicts of the last ones
    resender.cancel()
    for k in keepers:
        k.cancel()
    for s in stations:
        s.client.disconnect()


def run(plan: Plan) -> dict:
    """Set up, drive, check. The result's `problems` lists every failed check (empty: all held)."""
    folder = plan.folder or Path(tempfile.mkdtemp(prefix="hospital-"))
    names = [f"{'site2' if k % 2 else 'hub'}-{k:04d}" for k in range(plan.stations)]
    hub = SampleBroker(folder / "hub", [n for n in names if n.startswith("hub")] + ["bridge-site2"])
    site = SampleBroker(folder / "site", [n for n in names if n.startswith("site2")], extra=hub.bridge_config())
    pg = Postgres(folder / "pg").start()
    consumers = Consumers(folder, hub, pg.dsn, plan)
    tally, events = Tally(), []
    try:
        deadline = time.monotonic() + 30
        while consumers.subscribed() < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        asyncio.run(drive(plan, hub, site, consumers, tally, events))
        with psycopg.connect(pg.dsn) as conn:
            rows, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM checkins").fetchone()
            stored = {r[0]: r[1] for r in conn.execute(
                "SELECT id::text, extract(epoch FROM stored_at - read_at) FROM checkins")}
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        consumers.stop()
        site.stop()
        hub.stop()
        pg.stop()
    sent = set(tally.sent)
    lost, unexpected = sent - stored.keys(), stored.keys() - sent
    no_receipt = sent - tally.receipts.keys()
    verdict_due = {i for i in sent & stored.keys() if stored[i] < plan.verdict_max_age - 5}
    no_verdict = verdict_due - tally.verdicts.keys()
    latencies = sorted(tally.receipts[i] - tally.sent[i][1] for i in tally.receipts)
    problems = [text for bad, text in (
        (lost, f"{len(lost)} check-ins sent and not stored"), (rows != distinct, f"{rows - distinct} stored twice"),
        (unexpected, f"{len(unexpected)} rows never sent"), (dead, f"{dead} dead letters"),
        (no_receipt, f"{len(no_receipt)} check-ins without a receipt"),
        (no_verdict, f"{len(no_verdict)} check-ins stored in time without a verdict"),
        (tally.foreign, f"{tally.foreign} answers for ids never sent")) if bad]
    return {"plan": plan, "folder": folder, "sent": len(sent), "stored": len(stored), "rows": rows, "lost": len(lost),
            "twice": rows - distinct, "dead": dead, "receipted": len(tally.receipts), "verdicts": len(tally.verdicts),
            "verdicts_due": len(verdict_due), "resends": tally.resends, "no_subscribers": tally.no_subscribers,
            "receipt_copies": tally.receipt_copies, "verdict_copies": sum(tally.verdicts.values()) - len(tally.verdicts),
            "reconnects": tally.reconnects, "send_lag": tally.send_lag,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": latencies[-1] if latencies else 0,
            "mean": statistics.fmean(latencies) if latencies else 0, "events": events, "problems": problems}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    plan = Plan()
    ap.add_argument("--stations", type=int, default=plan.stations)
    ap.add_argument("--rate", type=float, default=plan.rate, help="check-ins per second, all stations together")
    ap.add_argument("--duration", type=float, default=plan.duration, help="seconds of sending")
    ap.add_argument("--kill", type=float, default=plan.kill, help="share of the run when a consumer is SIGKILLed")
    ap.add_argument("--down", type=float, default=plan.down, help="seconds the killed consumer stays down")
    ap.add_argument("--restart", type=float, default=plan.restart, help="share of the run when the hub restarts")
    ap.add_argument("--receipt-timeout", type=float, default=plan.receipt_timeout)
    ap.add_argument("--folder", type=Path, help="keep the brokers', consumers' and PostgreSQL's files here")
    args = ap.parse_args()
    r = run(Plan(stations=args.stations, rate=args.rate, duration=args.duration, kill=args.kill, down=args.down,
                 restart=args.restart, receipt_timeout=args.receipt_timeout, folder=args.folder))
    for line in r["events"]:
        print("#", line)
    print("| stations | rate /s | s | sent | stored | lost | stored twice | dead letters | receipted | verdicts "
          "(due) | resends | dropped by the hub (no subscriber) | p50 ms | p99 ms | max ms | generator late, max s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.stations} | {args.rate:g} | {args.duration:g} | {r['sent']} | {r['stored']} | {r['lost']} "
          f"| {r['twice']} | {r['dead']} | {r['receipted']} | {r['verdicts']} ({r['verdicts_due']}) | {r['resends']} "
          f"| {r['no_subscribers']} | {r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {r['max'] * 1000:.0f} "
          f"| {r['send_lag']:.1f} |")
    print("problems:", "; ".join(r["problems"]) or "none", f"(files: {r['folder']})")
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
