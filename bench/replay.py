"""The capture loop on the virtual Raspberry Pi camera's simulated clock: the presentations of
bench/camera.py (the same scenes for the same seeds), one at a time, through the product's
`Picamera2Source`, `FrameReader` and loop, with "fixed" and "auto" in the same run.

    .venv/bin/python bench/replay.py [--level hard] [--seeds 0-39] [--controls fixed,auto]
                                     [--pi-factor 1] [--json FILE]

Unlike bench/camera.py (the real daemon in wall-clock time, 20 presentations a level in about
7 minutes, its figures moved by whatever else the machine does), time here is the camera's:
each capture advances it by one frame duration, and a frame's decode time (CPU time of the
decoding thread, x --pi-factor) costs the frames the camera delivered meanwhile (the newest wins, as in the daemon's grabber).
Control latency stays the virtual camera's (2 or 3 frames, seeded). So a presentation replays
the same way on any machine up to the decode time's effect on which frames are seen, and 40
presentations a level take about 2 minutes. Time is counted from the phone appearing (it slides
into view in 0.25 s) to the first frame read with its card's payload; a frame read with another
payload is a wrong read. The counter is empty for 1 s before each phone (AE settles on it).

    .venv/bin/python bench/replay.py --camera vcam [--level hard] [--seed 5] [--n 40] [--pi-factor 4]

`--camera vcam`: the second, independent virtual camera (`../shared/vcam`, issue 31; segno from
`$VCAM_SEGNO` unless the venv has it) on its own virtual clock: its whole time line of --n
presentations for VCAM_SEED --seed through the daemon's own per-frame step (`Station.step`: the
scene gate, decoder, presenter, check-in into a throw-away outbox, and the loop, which lets go of
handled codes), each step's CPU time (x --pi-factor; CPU rather than wall time, so that other work
on the machine does not change which frames are seen) costing the frames the camera delivered
meanwhile. Scored as vcam's README says: a check-in counts for the presentation whose card it
carries if made between 0.1 s before its phone appeared and 1.5 s after it left, else it is a
wrong read; a second one is a duplicate; a red "not a card" while a card is shown is a wrong read.
Per presentation, the first check-in's latency and vcam's drawn conditions (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "agent" / "sim" / "vcam"))
sys.path.insert(0, str(ROOT))

import picamera2 as vcam  # noqa: E402  (agent/sim/vcam: the virtual camera)

from agent.capture.picam import Picamera2Source  # noqa: E402
from agent.cards import read_card  # noqa: E402
from agent.config import CameraConfig  # noqa: E402
from agent.decode import FrameReader  # noqa: E402
from agent.sim import camera as phys  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402

vcam.CLOCK = "virtual"
APPEAR_S = 1.0


def frames(level: str, seed: int, control: str, pi_factor: float, hold: float = 3.0,
           reader: FrameReader | None = None):
    """Replay one presentation: (t from the phone appearing, frame, the reader's result, the card's
    payload) for every frame the reader decoded (with --pi-factor 0, every frame the camera gave),
    each after the loop has steered on it."""
    rng = random.Random(f"camera-bench:{level}:{seed}")        # bench/camera.py's scene for this seed
    text = bhyt(rng) if seed % 3 else cccd(rng)
    vcam.SCENE = vcam.Scene([phys.Phone(text, APPEAR_S, hold, level, seed)], seed)
    vcam._EPOCH.clear()
    src = Picamera2Source(replace(CameraConfig(), source="picamera2", fps=30.0, control=control),
                          factory=vcam.Picamera2)
    src.open()
    cam, reader = src.cam, reader or FrameReader()
    try:
        while True:
            frame = src.read()
            t = frame.t - vcam._EPOCH[0] - APPEAR_S
            if t > hold:
                break
            t0 = time.thread_time()          # CPU time: the figures do not move with the machine's load
            result = reader.read(frame.gray, view=frame.view)
            src.steer(frame, result, True)
            busy = (time.thread_time() - t0) * pi_factor
            yield t, frame, result, text
            skip = int(busy / cam._frame_s())       # frames delivered while the decoder was busy
            cam._virtual_t += skip * cam._frame_s()
            cam._seq += skip
            if src._returned is not None:        # the landing check counts them as the station's time
                src._returned -= skip * cam._frame_s()   # away, as the daemon's wall clock would
    finally:
        src.close()


def presentation(level: str, seed: int, control: str, pi_factor: float, hold: float = 3.0) -> dict:
    first, wrong, want = None, 0, None
    for t, _, result, text in frames(level, seed, control, pi_factor, hold):
        want = want or read_card(text).to_dict()["card"]
        for code in result.codes:
            if read_card(code.raw or code.text).to_dict().get("card") == want:
                first = t if first is None and t >= 0 else first
            elif t >= 0:
                wrong += 1
    return {"level": level, "seed": seed, "control": control, "read_s": first, "wrong": wrong}


SHARED_VCAM = ROOT.parent / "shared" / "vcam"
EARLY_S, LATE_S = 0.1, 1.5          # vcam's README: the window a check-in counts in


def vcam_run(level: str, seed: int, n: int, control: str, pi_factor: float) -> list[dict]:
    """vcam's whole time line of `n` presentations through the daemon's per-frame step, on its
    virtual clock. One dict per presentation: first check-in's latency, wrong reads, duplicates."""
    from agent.config import Config
    from agent.decode import DecodeResult  # noqa: F401  (the station's import order)
    from agent.feedback import Feedback, NoOutput
    from agent.checkin import Action
    from agent.station import Station
    import vcamsim
    import picamera2.picamera2 as fake

    os.environ.update(VCAM_SEED=str(seed), VCAM_LEVEL=level, VCAM_N=str(n))
    os.environ.pop("VCAM_OUT", None)
    vcamsim._world = None                                  # a new world for this run
    import agent.capture.picam as picam

    clock = vcamsim.VirtualClock()
    fake.RealClock = lambda: clock                         # the fake's pipeline on the virtual clock
    # the source's own clock too: the landing check compares the frames' timestamps (virtual) with
    # how long the station was away between two reads, which must count the CPU time charged
    # (else a slow step at --pi-factor 4 reads as "frames dropped" and the loop falls back)
    real_now, picam.now = picam.now, clock.time
    with tempfile.TemporaryDirectory(prefix="replay-vcam-") as tmp:
        cfg = Config()
        cfg.station.state_dir = str(Path(tmp) / "state")
        cfg.feedback.backend = "none"
        cfg.camera.source, cfg.camera.control, cfg.camera.fps = "picamera2", control, 30.0
        station = Station(cfg, feedback=Feedback(NoOutput()))
        src = Picamera2Source(cfg.camera, factory=fake.Picamera2)
        station.source = src
        src.open()
        world = vcamsim.world_from_env()
        end = world.t0 + n * 5.5 + 1.0
        events: list[tuple[float, str, str]] = []          # (t, "checkin" | "red", payload)
        try:
            while clock.time() < end:
                frame = replace(src.read(), t=clock.time())
                t0 = time.thread_time()      # CPU time: the figures do not move with the machine's load
                for d in station.step(frame):
                    if d.action is Action.CHECKIN:
                        events.append((frame.t, "checkin", d.payload or ""))
                    elif d.action is Action.REJECTED:
                        events.append((frame.t, "red", ""))
                clock.sleep((time.thread_time() - t0) * pi_factor)
        finally:
            src.close()
            station.outbox.close()
            picam.now = real_now
    out = []
    used = set()
    for p in world.presentations:
        start, stop = world.t0 + p.start, world.t0 + p.end
        mine = [e for e in events if e[1] == "checkin" and e[2] == p.text and start - EARLY_S <= e[0] <= stop + LATE_S]
        used.update(mine)
        reds = [e for e in events if e[1] == "red" and start <= e[0] <= stop]
        out.append({"index": p.index, "control": control, "level": level, "seed": seed,
                    "read_s": (mine[0][0] - start) if mine else None, "duplicates": max(0, len(mine) - 1),
                    "reds": len(reds), "conditions": p.conditions})
    stray = [e for e in events if e[1] == "checkin" and e not in used]
    if out:
        out[0]["stray_checkins"] = len(stray)               # check-ins no presentation accounts for
    return out


def vcam_main(args) -> int:
    segno = os.environ.get("VCAM_SEGNO")
    if not SHARED_VCAM.is_dir():
        raise SystemExit(f"--camera vcam needs the second virtual camera at {SHARED_VCAM}")
    sys.path[:0] = [str(SHARED_VCAM)] + ([segno] if segno else [])
    for mod in [m for m in sys.modules if m == "picamera2" or m.startswith("picamera2.")]:
        del sys.modules[mod]                                # agent/sim/vcam's, imported above
    try:
        import segno as _  # noqa: F401
    except ImportError:
        raise SystemExit("vcam needs segno: pip install --target DIR segno, then VCAM_SEGNO=DIR")
    controls = args.controls.split(",")
    results = {c: vcam_run(args.level, args.seed, args.n, c, args.pi_factor) for c in controls}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"vcam {args.level}, seed {args.seed}, {args.n} presentations, decode time x{args.pi_factor:g}")
    print("| control | read within 1 s | within 2 s | median s | wrong reads | duplicates | red on a card |\n"
          "|---|---|---|---|---|---|---|")
    for c, rs in results.items():
        times = [r["read_s"] for r in rs]
        median = statistics.median([x if x is not None else float("inf") for x in times])
        print(f"| {c} | {sum(x is not None and x <= 1 for x in times) / len(rs):.0%} | "
              f"{sum(x is not None and x <= 2 for x in times) / len(rs):.0%} | {median:.2f} | "
              f"{rs[0].get('stray_checkins', 0)} | {sum(r['duplicates'] for r in rs)} | {sum(r['reds'] for r in rs)} |")
    if len(controls) == 2:
        a, b = controls
        for x, y in ((a, b), (b, a)):
            lost = [(r["index"], r["read_s"], s["read_s"]) for r, s in zip(results[x], results[y])
                    if r["read_s"] is not None and r["read_s"] <= 2 and (s["read_s"] is None or s["read_s"] > 2)]
            print(f"- {x} reads within 2 s, {y} does not: {len(lost)}: " +
                  ", ".join(f"#{i} ({x} {p:.2f} s, {y} {'never' if q is None else f'{q:.2f} s'})" for i, p, q in lost))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--camera", default="ours", choices=("ours", "vcam"))
    ap.add_argument("--seed", type=int, default=5, help="vcam: VCAM_SEED")
    ap.add_argument("--n", type=int, default=40, help="vcam: presentations")
    ap.add_argument("--level", default="medium", choices=sorted(phys.LEVELS))
    ap.add_argument("--seeds", default="0-39", help="first-last (bench/camera.py --seed S --n N is S-(S+N-1))")
    ap.add_argument("--controls", default="fixed,auto")
    ap.add_argument("--pi-factor", type=float, default=1.0, help="decode time counts this many times")
    ap.add_argument("--json", help="write every presentation's result here")
    args = ap.parse_args()
    if args.camera == "vcam":
        return vcam_main(args)
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    controls = args.controls.split(",")
    results = [presentation(args.level, s, c, args.pi_factor) for s in seeds for c in controls]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"{args.level}, {len(seeds)} presentations (seeds {args.seeds}), decode time x{args.pi_factor:g}")
    print("| control | read within 1 s | within 2 s | median s | wrong reads |\n|---|---|---|---|---|")
    for c in controls:
        times = [r["read_s"] for r in results if r["control"] == c]
        n = len(times)
        median = statistics.median([x if x is not None else float("inf") for x in times])
        print(f"| {c} | {sum(x is not None and x <= 1 for x in times) / n:.0%} | "
              f"{sum(x is not None and x <= 2 for x in times) / n:.0%} | {median:.2f} | "
              f"{sum(r['wrong'] for r in results if r['control'] == c)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
