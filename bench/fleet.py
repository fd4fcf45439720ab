"""Fleet benchmark: N stations (the real outbox and MQTT link, each with its own state) against one
local Mosquitto and two reference consumers writing to PostgreSQL, while the broker is restarted
once and a consumer is killed once.

    .venv/bin/python bench/fleet.py [--n 10,100,500] [--per-station 4] [--seconds 20]
                                    [--per-process 50] [--delivered-on broker|receipt] [--markdown]

Stations are spread over processes of at most --per-process each: a real station is one process
on its own Pi, and hundreds of link threads behind one interpreter lock measure the simulator,
not the broker or the consumers.

Reports per N: check-ins produced, stored exactly once, duplicates the consumers suppressed
(sum of their last reports; the killed one's count before it died), lost (must be 0), latency
from `read_at` to the database commit (p50 / p95), and the CPU seconds of the broker and of the
consumers. Needs root or a 'postgres' user, Debian's mosquitto and postgresql.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import psycopg  # noqa: E402

from agent.cards import read_card  # noqa: E402
from agent.event import checkin_body  # noqa: E402
from agent.config import MqttConfig  # noqa: E402
from agent.mqtt.link import MqttLink  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402
from support.broker import Broker  # noqa: E402
from support.postgres import Postgres  # noqa: E402

CONSUMER = ROOT / "examples" / "consumer" / "consumer.py"
SUMMARY = re.compile(r"stored (\d+), duplicates suppressed (\d+)")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class ConsumerProc:
    def __init__(self, broker: Broker, pg: Postgres, name: str):
        self.proc = subprocess.Popen([sys.executable, str(CONSUMER), "--broker", f"127.0.0.1:{broker.port}",
                                      "--dsn", pg.dsn, "--name", name], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.subscribed = threading.Event()
        self.last = (0, 0)
        self.cpu = 0.0
        threading.Thread(target=self._watch, daemon=True).start()
        if not self.subscribed.wait(30):
            raise RuntimeError(f"consumer {name} did not subscribe")

    def _watch(self) -> None:
        for line in self.proc.stderr:
            if "subscribed to" in line:
                self.subscribed.set()
            if m := SUMMARY.search(line):
                self.last = (int(m.group(1)), int(m.group(2)))
            self.cpu = max(self.cpu, cpu_s(self.proc.pid))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.cpu = max(self.cpu, cpu_s(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(20)


def station_group(port: int, tmp: str, sids: list[str], plan: list[tuple[float, int]], t0: float,
                  seed: int, delivered_on: str, conn) -> None:
    """One process of simulated stations: store check-ins on the shared schedule (wall clock from
    t0), report the ids produced, then the undelivered depth when the parent asks."""
    logging.disable(logging.WARNING)
    stations = []
    for sid in sids:
        box = Outbox(Path(tmp) / sid / "outbox.db", station=sid)
        link = MqttLink(MqttConfig(host="127.0.0.1", port=port, tls=False, allow_insecure=True,
                                   keepalive_s=30, health_interval_s=3600, require_subscriber=True,
                                   delivered_on=delivered_on, receipt_timeout_s=10),
                        sid, box, backoff=(0.5, 5.0))
        link.start()
        stations.append((box, link))
    conn.send("ready")
    rng = random.Random(seed)
    produced = []
    for at, i in plan:
        delay = t0 + at - time.time()
        if delay > 0:
            time.sleep(delay)
        payload = bhyt(rng) if rng.random() < 0.7 else cccd(rng)
        produced.append(stations[i][0].put(checkin_body(read_card(payload))).id)
    conn.send(produced)
    while conn.recv() == "depth":
        conn.send(sum(box.depth() for box, _ in stations))
    for box, link in stations:
        link.stop(timeout=1)
        box.close()
    conn.send("stopped")


def run(n: int, per_station: int, seconds: float, per_process: int = 50, drain_s: float = 300.0,
        delivered_on: str = "broker") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"fleet{n}-", dir="/tmp"))
    pg = Postgres(tmp / "pg").start()
    broker = Broker(tmp / "broker").start()
    broker_cpu = 0.0
    consumers = [ConsumerProc(broker, pg, "c1"), ConsumerProc(broker, pg, "c2")]
    rng = random.Random(n)
    plan = sorted((rng.uniform(0, seconds), i) for i in range(n) for _ in range(per_station))
    ctx = multiprocessing.get_context("spawn")
    t0 = time.time() + 5 + n * 0.02          # time for every group to connect first
    groups = []
    for g, first in enumerate(range(0, n, per_process)):
        idx = range(first, min(n, first + per_process))
        sids = [f"counter-{i:03d}" for i in idx]
        mine = [(at, i - first) for at, i in plan if i in idx]
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=station_group, args=(broker.port, str(tmp), sids, mine, t0, n * 1000 + g, delivered_on, child),
                           daemon=True)
        proc.start()
        groups.append((proc, parent))
    for _, pipe in groups:
        if not pipe.poll(120):
            raise RuntimeError("a station group did not start")
        pipe.recv()
    events = [(0.4, "kill c1"), (0.5, "restart broker"), (0.6, "restart c1")]
    for frac, what in events:
        delay = t0 + frac * seconds - time.time()
        if delay > 0:
            time.sleep(delay)
        if what == "kill c1":
            consumers[0].stop(signal.SIGKILL)
        elif what == "restart broker":
            broker_cpu += cpu_s(broker.proc.pid)
            broker.stop()
            time.sleep(0.5)
            broker.start()
        else:
            old = consumers[0]
            consumers[0] = ConsumerProc(broker, pg, "c1")
            consumers.append(old)          # keep its counts
    produced: list[str] = []
    for _, pipe in groups:
        produced += pipe.recv()
    produced_at = time.monotonic()
    deadline = produced_at + drain_s
    stored = 0
    while time.monotonic() < deadline:
        with psycopg.connect(pg.dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM checkins").fetchone()[0]
        if stored >= len(produced):
            break
        time.sleep(0.5)
    drained_s = time.monotonic() - produced_at
    time.sleep(6)  # the consumers' next report
    with psycopg.connect(pg.dsn) as conn:
        ids = {str(r[0]) for r in conn.execute("SELECT id FROM checkins")}
        p50, p95 = conn.execute("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s), "
                                "percentile_cont(0.95) WITHIN GROUP (ORDER BY s) FROM "
                                "(SELECT extract(epoch FROM stored_at - read_at) AS s FROM checkins) t").fetchone()
    broker_cpu += cpu_s(broker.proc.pid)
    queued = 0                              # still in the outboxes: late, not lost
    for _, pipe in groups:
        pipe.send("depth")
        queued += pipe.recv()
    for proc, pipe in groups:
        pipe.send("stop")
        pipe.poll(30)
        proc.join(10)
    for c in consumers:
        c.stop()
    broker.stop()
    pg.stop()
    return {"n": n, "produced": len(produced), "stored": len(ids & set(produced)), "extra": len(ids - set(produced)),
            "duplicates": sum(c.last[1] for c in consumers), "queued": queued,
            "lost": len(set(produced) - ids) - queued, "drained_s": drained_s,
            "p50": p50, "p95": p95, "broker_cpu": broker_cpu, "consumer_cpu": sum(c.cpu for c in consumers),
            "seconds": seconds, "processes": len(groups), "mode": delivered_on}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="10,100,500")
    ap.add_argument("--per-station", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--per-process", type=int, default=50)
    ap.add_argument("--delivered-on", default="broker", choices=("broker", "receipt"),
                    help="the stations' [mqtt] delivered_on (receipt: delivered on the consumers' receipts)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    rows = [run(int(n), args.per_station, args.seconds, args.per_process, delivered_on=args.delivered_on)
            for n in args.n.split(",")]
    head = ("| stations (processes) | produced | stored exactly once | duplicates suppressed | still queued | lost | "
            "all stored after | latency p50 / p95 | broker CPU | consumers CPU |")
    print(head + "\n|" + "---|" * 10)
    for r in rows:
        print(f"| {r['n']} ({r['processes']}) | {r['produced']} | {r['stored']} (+{r['extra']} unknown) | {r['duplicates']} | {r['queued']} "
              f"| {r['lost']} | {r['drained_s']:.0f} s | {r['p50']:.2f} s / {r['p95']:.2f} s | {r['broker_cpu']:.1f} s "
              f"| {r['consumer_cpu']:.1f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
