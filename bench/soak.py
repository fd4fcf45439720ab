"""Soak: the real station daemon for an hour against a local Mosquitto and a consumer that sends
receipts, its memory, open files and threads sampled; reports each one's slope after warm-up
(the target is no growth: a leak of a few kB a check-in shows as MB an hour).

The daemon (the fault tests' config: tests/support/daemon.py) replays the bundled demo frames in a
loop with no cooldown (several check-ins a second, far above a real counter's rate), sends health
every second, delivers on receipts, and prunes delivered check-ins after `--retention` seconds, so
the outbox's pruning is inside the hour too.

    .venv/bin/python bench/soak.py [--minutes 60] [--warmup 10] [--every 10] [--csv FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

import agent.admin.status  # noqa: E402,F401  (Daemon.status imports it at the end: load it with the rest)
from support.broker import Broker  # noqa: E402
from support.daemon import Daemon, config  # noqa: E402

STATION = "soak-01"


class Consumer:
    """The hospital side reduced to what the station needs: take each check-in, send its receipt."""

    def __init__(self, port: int):
        self.ids: set[str] = set()
        self.messages = 0
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-consumer", protocol=MQTTProtocolVersion.MQTTv5)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("hospital/checkin/+/checkin", qos=1)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, msg) -> None:
        event_id = json.loads(msg.payload)["id"]
        with self.lock:
            self.ids.add(event_id)
            self.messages += 1
        c.publish(msg.topic.rsplit("/", 1)[0] + "/receipt", json.dumps({"ids": [event_id]}), qos=1)

    def stop(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def sample(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {"rss_mb": int(fields["VmRSS"][0]) / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(fields["Threads"][0])}


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 3600 * sum((t - mt) * (v - mv) for t, v in points) / den if den else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="minutes left out of the slopes")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--retention", type=int, default=300, help="the outbox's retention_s")
    ap.add_argument("--csv", type=Path, help="write every sample here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    broker = Broker(tmp / "broker").start()
    consumer = Consumer(broker.port)
    daemon = Daemon(config(tmp, tmp / "state", station=STATION, port=broker.port,
                           extra=f"retention_s = {args.retention}",
                           mqtt_extra='delivered_on = "receipt"\nreceipt_timeout_s = 10'))
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    try:
        while (elapsed := time.monotonic() - t0) < args.minutes * 60:
            if daemon.proc.poll() is not None:
                print(f"the daemon exited with {daemon.proc.returncode}:\n{daemon.log[-2000:]}", file=sys.stderr)
                return 1
            db = tmp / "state" / "outbox.db"
            size = sum(p.stat().st_size for p in db.parent.glob("outbox.db*") if p.is_file())
            with consumer.lock:
                received = len(consumer.ids)
            samples.append({"t": elapsed, **sample(daemon.proc.pid), "db_mb": size / 2**20,
                            "recorded": len(daemon.recorded()), "received": received})
            if args.csv:                     # as it goes: a run cut short keeps its samples
                keys = list(samples[0])
                if len(samples) == 1:
                    args.csv.write_text(",".join(keys) + "\n")
                with args.csv.open("a") as f:
                    f.write(",".join(f"{samples[-1][k]:.3f}" if isinstance(samples[-1][k], float)
                                     else str(samples[-1][k]) for k in keys) + "\n")
            time.sleep(args.every)
        status = daemon.status()
    finally:
        code = daemon.stop()
    time.sleep(1)
    consumer.stop()
    broker.stop()
    recorded = daemon.recorded()
    after = [s for s in samples if s["t"] >= args.warmup * 60]
    print(f"soak: {args.minutes:g} min, {len(samples)} samples every {args.every:g} s, slopes over the "
          f"{len(after)} after {args.warmup:g} min of warm-up; the daemon stopped with {code}")
    print(f"check-ins recorded {len(recorded)}, received by the consumer {len(consumer.ids)} "
          f"({consumer.messages} messages), left undelivered at the end {status['outbox']['queue_depth']}")
    print("| measure | at warm-up end | at the end | min .. max after warm-up | slope per hour after warm-up |")
    print("|---|---|---|---|---|")
    for key, unit in (("rss_mb", "MB"), ("fds", ""), ("threads", ""), ("db_mb", "MB")):
        values = [s[key] for s in after] or [samples[-1][key]]
        slope = slope_per_hour([(s["t"], s[key]) for s in after])
        print(f"| {key} | {values[0]:.1f} | {values[-1]:.1f} | {min(values):.1f} .. {max(values):.1f} "
              f"| {slope:+.2f} {unit} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
