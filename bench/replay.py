"""The capture loop on the virtual Raspberry Pi camera's simulated clock: the presentations of
bench/camera.py (the same scenes for the same seeds), one at a time, through the product's
`Picamera2Source`, `FrameReader` and loop, with "fixed" and "auto" in the same run.

    .venv/bin/python bench/replay.py [--level hard] [--seeds 0-39] [--controls fixed,auto]
                                     [--pi-factor 1] [--json FILE]

Unlike bench/camera.py (the real daemon in wall-clock time, 20 presentations a level in about
7 minutes, its figures moved by whatever else the machine does), time here is the camera's:
each capture advances it by one frame duration, and a frame's decode time (x --pi-factor)
costs the frames the camera delivered meanwhile (the newest wins, as in the daemon's grabber).
Control latency stays the virtual camera's (2 or 3 frames, seeded). So a presentation replays
the same way on any machine up to the decode time's effect on which frames are seen, and 40
presentations a level take about 2 minutes. Time is counted from the phone appearing (it slides
into view in 0.25 s) to the first frame read with its card's payload; a frame read with another
payload is a wrong read. The counter is empty for 1 s before each phone (AE settles on it).
"""

from __future__ import annotations

import argparse
import json
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
            t0 = time.perf_counter()
            result = reader.read(frame.gray, view=frame.view)
            src.steer(frame, result, True)
            busy = (time.perf_counter() - t0) * pi_factor
            yield t, frame, result, text
            skip = int(busy / cam._frame_s())       # frames delivered while the decoder was busy
            cam._virtual_t += skip * cam._frame_s()
            cam._seq += skip
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--level", default="medium", choices=sorted(phys.LEVELS))
    ap.add_argument("--seeds", default="0-39", help="first-last (bench/camera.py --seed S --n N is S-(S+N-1))")
    ap.add_argument("--controls", default="fixed,auto")
    ap.add_argument("--pi-factor", type=float, default=1.0, help="decode time counts this many times")
    ap.add_argument("--json", help="write every presentation's result here")
    args = ap.parse_args()
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
