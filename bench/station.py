"""Station benchmark: presentation-to-signal latency, read-within-1-s share, CPU and memory,
running the real daemon loop (capture thread, decoder, outbox, feedback) on simulated frames
paced at 30 fps. Baseline in the same process: the same station with plain zxing-cpp only.

    .venv/bin/python bench/station.py [--per-level 12]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.capture import Frame  # noqa: E402
from agent.config import Config  # noqa: E402
from agent.decode import FrameReader  # noqa: E402
from agent.feedback import Feedback, NoOutput, Signal  # noqa: E402
from agent.sim.payloads import bhyt  # noqa: E402
from agent.sim.screen import empty_scene, render  # noqa: E402
from agent.station import Station  # noqa: E402

FPS = 30.0
HOLD_S, GAP_S = 1.5, 1.0


class PacedSource:
    """Pre-rendered frames at 30 fps in real time; remembers when each presentation first showed."""

    def __init__(self, frames: list[tuple[np.ndarray, int | None]], mark_at: int | None = None):
        self.frames, self.first_shown, self.i, self.done = frames, {}, 0, threading.Event()
        self.mark_at, self.mark = mark_at, None  # (process time, wall time) when frame mark_at is served

    def open(self):
        self.next_t = time.monotonic()

    def read(self):
        if self.i >= len(self.frames):
            self.done.set()
            return None
        delay = self.next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_t += 1 / FPS
        gray, pres = self.frames[self.i]
        t = time.monotonic()
        if self.i == self.mark_at:
            self.mark = (time.process_time(), t)
        if pres is not None:
            self.first_shown.setdefault(pres, t)
        self.i += 1
        return Frame(gray, t, self.i)

    def close(self):
        pass


def build(levels, per_level):
    frames, meta = [], []
    empties = [empty_scene(i) for i in range(8)]
    k = 0
    for level in levels:
        for i in range(per_level):
            for j in range(int(GAP_S * FPS)):
                frames.append((empties[j % 8], None))
            views = [render(bhyt(random.Random(f"b{level}{i}")), level, 7000 + 40 * k + v).frame for v in range(8)]
            for j in range(int(HOLD_S * FPS)):
                frames.append((views[j % 8], k))
            meta.append(level)
            k += 1
    return frames, meta


def run_station(frames, plain_only: bool, state: Path, mark_at: int | None = None) -> dict:
    cfg = Config()
    cfg.station.state_dir = str(state)
    cfg.feedback.backend = "none"
    cfg.camera.source = "replay"      # the frames come from `source` below; chosen explicitly
    cfg.checkin.cooldown_s = 1.0
    station = Station(cfg, feedback=Feedback(NoOutput()))
    if plain_only:
        station.reader = FrameReader(order=(), rectify=False)  # plain zxing-cpp alone
    src = PacedSource(frames, mark_at)
    cpu0, wall0 = time.process_time(), time.monotonic()
    th = threading.Thread(target=station.run, kwargs={"source": src})
    th.start()
    src.done.wait()
    time.sleep(0.3)
    if src.mark:  # from the mark on: the steady state
        cpu0, wall0 = src.mark
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    station.stop()
    th.join(10)
    signals = [(t, s) for t, s in station.feedback.history if s in (Signal.CHECKIN, Signal.CHECKIN_WARNING)]
    return {"first": src.first_shown, "signals": signals, "cpu": cpu, "frames": station.counters.frames,
            "decoded": station.counters.decoded}


def latencies(res, n):
    out = []
    starts = [res["first"][k] for k in range(n)]
    for k in range(n):
        end = starts[k + 1] if k + 1 < n else float("inf")
        hits = [t for t, _ in res["signals"] if starts[k] <= t < end]
        out.append(hits[0] - starts[k] if hits else None)
    return out


def empty_cpu(plain_only: bool, state: Path, seconds: float = 20.0) -> float:
    """CPU share with nobody at the counter, measured once the station has gone idle
    (after idle_after_s = 3 s of an unchanging scene; the first 5 s are not counted)."""
    still = empty_scene(3)
    res = run_station([(still, None)] * int(seconds * FPS), plain_only, state, mark_at=int(5 * FPS))
    return res["cpu"]


def daemon_rss_mb(seconds: float = 20.0) -> tuple[float, float]:
    """Peak and current resident memory of a real `scanner-agent run` (the demo) after `seconds`."""
    import os
    import subprocess
    with tempfile.TemporaryDirectory() as cwd:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run"], cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        time.sleep(seconds)
        status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
        proc.terminate()
        proc.wait(10)
    values = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status if line.startswith(("VmHWM", "VmRSS"))}
    return values["VmHWM"], values["VmRSS"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-level", type=int, default=12)
    args = ap.parse_args()
    levels = ["medium", "hard"]
    frames, meta = build(levels, args.per_level)
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for name, plain in (("station (cascade)", False), ("plain zxing-cpp only", True)):
            res = run_station(frames, plain, Path(tmp) / name.split()[0])
            lat = latencies(res, len(meta))
            rows[name] = (lat, res["cpu"], empty_cpu(plain, Path(tmp) / (name.split()[0] + "-empty")))
        print(f"{len(meta)} presentations ({args.per_level} per level), held {HOLD_S} s after {GAP_S} s of empty "
              f"counter, frames paced at {FPS:.0f} fps through the real daemon loop")
        print("| | " + " | ".join(rows) + " |")
        print("|---|" + "---|" * len(rows))
        for level in levels:
            cells = []
            for lat, _, _ in rows.values():
                got = [x for x, lv in zip(lat, meta) if lv == level]
                within = sum(1 for x in got if x is not None and x <= 1.0)
                cells.append(f"{100 * within / len(got):.0f}% ({within}/{len(got)})")
            print(f"| {level}: read within 1 s | " + " | ".join(cells) + " |")
        for label, q in (("p50", 50), ("p95", 95)):
            cells = []
            for lat, _, _ in rows.values():
                got = [x for x in lat if x is not None]
                cells.append(f"{1000 * np.percentile(got, q):.0f} ms" if got else "-")
            print(f"| latency {label} (read presentations) | " + " | ".join(cells) + " |")
        print("| never read | " + " | ".join(str(sum(x is None for x in lat)) for lat, _, _ in rows.values()) + " |")
        print("| CPU during presentations (one core) | " + " | ".join(f"{100 * c:.0f}%" for _, c, _ in rows.values()) + " |")
        print("| CPU, empty counter (idle steady state) | " + " | ".join(f"{100 * e:.1f}%" for _, _, e in rows.values()) + " |")
    peak, now = daemon_rss_mb()
    print(f"resident memory of the daemon (`scanner-agent run` demo, after 20 s): peak {peak:.0f} MB, "
          f"now {now:.0f} MB [goal < 150 MB]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
