"""Outbox benchmark: sustained put rate (synchronous=FULL) and drain of 10 000 queued check-ins
to a local Mosquitto after an outage, each against a bare baseline timed in this process.

    .venv/bin/python bench/outbox.py [--puts 3000] [--drain 10000]

Baselines: a bare sqlite3 INSERT + COMMIT per row with the same durability (the floor any
durable put pays), and raw paho publishing the same payloads at QoS 1 with the same window.
Memory: peak Python heap (tracemalloc) and RSS while draining 1 000 vs 10 000 queued.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from agent.config import MqttConfig  # noqa: E402
from agent.mqtt.link import MqttLink  # noqa: E402
from agent.outbox import Outbox  # noqa: E402
from agent.sim.payloads import bhyt  # noqa: E402
from agent.cards import read_card  # noqa: E402
from tests.support.broker import Broker  # noqa: E402

import random  # noqa: E402


def sample_body(i: int) -> dict:
    read = read_card(bhyt(random.Random(i)))
    return {"read_at": "2026-11-24T08:00:00.000+07:00", "clock_synced": True, **read.to_dict()}


def bench_put(folder: Path, n: int) -> tuple[float, float]:
    bodies = [sample_body(i) for i in range(50)]
    raw = sqlite3.connect(folder / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute("CREATE TABLE t (id TEXT PRIMARY KEY, payload TEXT)")
    t0 = time.perf_counter()
    for i in range(n):
        raw.execute("BEGIN")
        raw.execute("INSERT INTO t VALUES (?, ?)", [str(i), json.dumps(bodies[i % 50])])
        raw.execute("COMMIT")
    raw_rate = n / (time.perf_counter() - t0)
    ob = Outbox(folder / "outbox.db", station="bench", max_events=10**7)
    t0 = time.perf_counter()
    for i in range(n):
        ob.put(bodies[i % 50])
    rate = n / (time.perf_counter() - t0)
    ob.close()
    return rate, raw_rate


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_drain(folder: Path, n: int) -> dict:
    broker = Broker(folder / f"broker{n}").start()
    try:
        ob = Outbox(folder / f"drain{n}.db", station="bench", max_events=10**7)
        body = sample_body(1)
        for _ in range(n):  # queued during the outage
            ob.put(body)
        cfg = MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True, health_interval_s=3600)
        tracemalloc.start()
        rss0 = rss_mb()
        peak_rss = [rss0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak_rss[0] = max(peak_rss[0], rss_mb())
                time.sleep(0.05)
        w = threading.Thread(target=watch)
        w.start()
        t0 = time.perf_counter()
        link = MqttLink(cfg, "bench", ob, backoff=(0.05, 0.5))
        link.start()
        while ob.depth():
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        link.stop()
        stop.set()
        w.join()
        heap_peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        ob.close()

        # baseline: raw paho, same payload, QoS 1, same in-flight window, no store
        payload = json.dumps({"id": "x", "seq": 1, **body}, ensure_ascii=False)
        acked = threading.Semaphore(0)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw", protocol=MQTTProtocolVersion.MQTTv5)
        c.on_publish = lambda *a: acked.release()
        c.max_inflight_messages_set(32)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        t0 = time.perf_counter()
        for _ in range(n):
            c.publish("bench/raw", payload, qos=1)
        for _ in range(n):
            acked.acquire()
        raw_seconds = time.perf_counter() - t0
        c.loop_stop()
        c.disconnect()
        return {"n": n, "seconds": seconds, "raw_seconds": raw_seconds, "heap_peak_mb": heap_peak,
                "rss_growth_mb": peak_rss[0] - rss0}
    finally:
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--puts", type=int, default=3000)
    ap.add_argument("--drain", type=int, default=10_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # the repository's disk, not a tmpfs
        folder = Path(tmp)
        rate, raw = bench_put(folder, args.puts)
        print(f"put, synchronous=FULL: {rate:.0f}/s (bare sqlite INSERT+COMMIT: {raw:.0f}/s, ratio {rate / raw:.2f}) "
              f"[goal >= 500/s]")
        small = bench_drain(folder, max(1, args.drain // 10))
        big = bench_drain(folder, args.drain)
        print(f"drain of {big['n']} queued: {big['seconds']:.1f} s = {big['n'] / big['seconds']:.0f}/s "
              f"(raw paho QoS 1 without a store: {big['raw_seconds']:.1f} s, ratio "
              f"{big['seconds'] / big['raw_seconds']:.2f}) [goal < 20 s]")
        print(f"memory while draining {small['n']} vs {big['n']}: peak Python heap {small['heap_peak_mb']:.1f} vs "
              f"{big['heap_peak_mb']:.1f} MB, RSS growth {small['rss_growth_mb']:.1f} vs {big['rss_growth_mb']:.1f} MB "
              f"[goal: flat]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
