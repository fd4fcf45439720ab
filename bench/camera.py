"""The capture loop on the virtual Raspberry Pi camera: the real daemon (`scanner-agent run` with
`source = "picamera2"` and agent/sim/vcam first on its import path) through N presentations per
level, with `[camera] control = "fixed"` (today's one view) and `"auto"` (the closed loop) in the
same run.

    .venv/bin/python bench/camera.py [--n 20] [--levels medium,hard] [--controls fixed,auto]
                                     [--pi-factor 1] [--markdown]

Each presentation is a phone sliding into view (`agent.sim.camera.Phone`), held for --hold
seconds with tremor and a tilt after 1.5 s, then an empty counter for --gap seconds. Measured:

- read within 1 s / 2 s of the phone appearing, and the median: the time the check-in was
  stored (the green signal follows it at once) minus the time the phone appeared;
- wrong reads: a check-in of another card than the one shown, or a red "not a card" signal
  while a card is shown; duplicates: a second check-in of the card of one presentation;
- decode time per frame (FrameReader.read, wall ms, in the daemon), frames decoded per second;
- CPU of the daemon without the virtual camera's own rendering (it runs in the daemon's process),
  while presentations run and over the idle tail.

--pi-factor K: the daemon's work on every frame (decode, capture loop, check-in: Station.step)
is followed by a sleep of (K-1) x its own time, inside the daemon (a sitecustomize hook the
benchmark puts on the path), so the decoder sees as few frames as a Pi K times slower would let
it (the camera keeps its pace, newest frame wins).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.cards import read_card  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402

VCAM = ROOT / "agent" / "sim" / "vcam"
LEAD_IN_S = 2.0
IDLE_AFTER_S = 4.0

HOOK = '''
import atexit, json, os, time
from agent.decode import decoder
from agent import station
_factor = float(os.environ.get("BENCH_PI_FACTOR", "1"))
_times = []
_read = decoder.FrameReader.read
def read(self, *a, **kw):
    t0 = time.perf_counter()
    out = _read(self, *a, **kw)
    _times.append((time.monotonic(), time.perf_counter() - t0))
    return out
decoder.FrameReader.read = read
_step = station.Station.step
def step(self, frame):
    t0 = time.perf_counter()
    out = _step(self, frame)
    if _factor > 1:     # all of the frame's work (decode, capture loop, check-in) counts K times
        time.sleep((time.perf_counter() - t0) * (_factor - 1))
    return out
station.Station.step = step
@atexit.register
def _dump():
    with open(os.environ["BENCH_DECODE_LOG"], "w") as f:
        json.dump(_times, f)
'''


def scene(level: str, n: int, hold: float, gap: float, base_seed: int) -> tuple[dict, list[str]]:
    phones, texts = [], []
    for k in range(n):
        rng = random.Random(f"camera-bench:{level}:{base_seed + k}")
        text = bhyt(rng) if k % 3 else cccd(rng)
        texts.append(text)
        phones.append({"text": text, "start": LEAD_IN_S + k * (hold + gap), "duration": hold, "level": level,
                       "seed": base_seed + k})
    return {"seed": base_seed, "phones": phones}, texts


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_daemon(control: str, level: str, args, workdir: Path) -> dict:
    spec, texts = scene(level, args.n, args.hold, args.gap, args.seed)
    d = workdir / f"{control}-{level}"
    d.mkdir()
    (d / "scene.json").write_text(json.dumps(spec))
    (d / "hook").mkdir()
    (d / "hook" / "sitecustomize.py").write_text(HOOK)
    fps = 30
    (d / "config.toml").write_text(f'''
[station]
id = "bench-camera"
state_dir = "{d / 'state'}"
[camera]
source = "picamera2"
fps = {fps}
control = "{control}"
[feedback]
backend = "console"
[logging]
level = "WARNING"
''')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(d / "hook"), str(VCAM), str(ROOT)]),
               SCANNER_VCAM_SCENE=str(d / "scene.json"), SCANNER_VCAM_LOG=str(d / "frames.jsonl"),
               BENCH_DECODE_LOG=str(d / "decode.json"), BENCH_PI_FACTOR=str(args.pi_factor))
    exe = ROOT / ".venv" / "bin" / "scanner-agent"
    proc = subprocess.Popen([str(exe), "run", "-c", str(d / "config.toml")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    reds: list[float] = []
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("[RED + buzz]"):
                reds.append(time.monotonic())
    threading.Thread(target=pump, daemon=True).start()
    frames_log = d / "frames.jsonl"
    deadline = time.monotonic() + 30
    while not frames_log.exists() or not frames_log.stat().st_size:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"daemon did not start:\n" + "\n".join(lines[-30:]))
        time.sleep(0.1)
    first = json.loads(frames_log.open().readline())
    epoch = first["t"] - first["scene_t"]              # monotonic time of scene time 0
    end_scene = LEAD_IN_S + args.n * (args.hold + args.gap)
    while time.monotonic() < epoch + LEAD_IN_S:
        time.sleep(0.05)
    cpu_start, t_start = cpu_s(proc.pid), time.monotonic()
    while time.monotonic() < epoch + end_scene:
        time.sleep(0.2)
    cpu_busy = cpu_s(proc.pid)
    t_busy = time.monotonic()
    time.sleep(IDLE_AFTER_S)           # the scene gate goes idle after [checkin] idle_after_s
    cpu_quiet = cpu_s(proc.pid)
    t_quiet = time.monotonic()
    time.sleep(args.idle_tail)
    cpu_idle = cpu_s(proc.pid) - cpu_quiet
    t_end = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    frames = [json.loads(x) for x in frames_log.open()]
    render = [f for f in frames if f.get("render_s") is not None]
    render_busy = sum(f["render_s"] for f in render if t_start < f["t"] <= t_busy)
    render_idle = sum(f["render_s"] for f in render if t_quiet < f["t"] <= t_end)
    wall_of = first["wall"] - first["t"]              # wall = monotonic + wall_of
    decodes = json.load(open(d / "decode.json")) if (d / "decode.json").exists() else []
    db = sqlite3.connect(d / "state" / "outbox.db")
    rows = [(created, json.loads(payload)) for created, payload in
            db.execute("SELECT created_at, payload FROM events ORDER BY seq")]
    db.close()

    per = []
    wrong = dups = 0
    expected = [read_card(t).to_dict()["card"] for t in texts]
    for k, ph in enumerate(spec["phones"]):
        appear = epoch + ph["start"]
        until = appear + args.hold + args.gap
        mine = [(c - wall_of) for c, p in rows if appear <= c - wall_of < until]
        right = [(c - wall_of) for c, p in rows if appear <= c - wall_of < until and p.get("card") == expected[k]]
        wrong += len(mine) - len(right)
        dups += max(0, len(right) - 1)
        wrong += sum(appear <= r < appear + args.hold for r in reds)
        per.append(min(right) - appear if right else None)
    busy_s = t_busy - (epoch + LEAD_IN_S)
    dec_busy = [s for t, s in decodes if epoch + LEAD_IN_S <= t <= t_busy]
    dec_idle = [s for t, s in decodes if t_quiet < t <= t_end]
    reads = [p for p in per if p is not None]
    return {"control": control, "level": level, "n": args.n,
            "within_1s": sum(p <= 1.0 for p in reads) / args.n, "within_2s": sum(p <= 2.0 for p in reads) / args.n,
            "median_s": statistics.median([p if p is not None else float("inf") for p in per]),
            "wrong": wrong, "duplicates": dups,
            "decode_ms": 1000 * statistics.mean(dec_busy) if dec_busy else 0.0,
            "decoded_fps": len(dec_busy) / busy_s,
            "cpu_busy": (cpu_busy - cpu_start - render_busy) / max(t_busy - t_start, 1e-6),
            "cpu_idle": (cpu_idle - render_idle) / args.idle_tail,
            "idle_decode_ms": 1000 * statistics.mean(dec_idle) if dec_idle else 0.0,
            "idle_fps": len(dec_idle) / args.idle_tail,
            "camera_fps": len([f for f in frames if epoch + LEAD_IN_S <= f["t"] <= t_busy]) / busy_s,
            "per": per}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="presentations per level")
    ap.add_argument("--levels", default="medium,hard")
    ap.add_argument("--controls", default="fixed,auto")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds each phone is shown")
    ap.add_argument("--gap", type=float, default=1.5, help="seconds of empty counter between phones")
    ap.add_argument("--idle-tail", type=float, default=6.0, help="idle seconds measured at the end")
    ap.add_argument("--pi-factor", type=float, default=1.0, help="decode time counts this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write every result (with per-presentation times) here")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        for level in args.levels.split(","):
            for control in args.controls.split(","):
                r = run_daemon(control, level, args, Path(tmp))
                results.append(r)
                print(f"# {control} {level}: {r['within_1s']:.0%} / {r['within_2s']:.0%}", file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    head = ("level", "control", "read within 1 s", "within 2 s", "median s", "wrong reads", "duplicates",
            "decode ms/frame", "frames decoded/s", "camera fps", "CPU busy", "CPU idle", "idle decodes/s")
    print(f"virtual camera, daemon runs: {args.n} presentations per level, decode time x{args.pi_factor:g}")
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        cells = (r["level"], r["control"], f"{r['within_1s']:.0%}", f"{r['within_2s']:.0%}",
                 f"{r['median_s']:.2f}", str(r["wrong"]), str(r["duplicates"]), f"{r['decode_ms']:.1f}",
                 f"{r['decoded_fps']:.1f}", f"{r['camera_fps']:.1f}", f"{r['cpu_busy']:.0%}", f"{r['cpu_idle']:.0%}",
                 f"{r['idle_fps']:.1f}")
        print(("| " + " | ".join(cells) + " |") if args.markdown else "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
