"""The capture loop on a USB webcam: `[camera] control = "fixed"` against `"auto"` on the stand-in
UVC webcam (agent/sim/webcam.py: 1080p MJPG at 30 fps, 720p YUYV at 10, 4K at 5; the virtual Pi
camera's physics at webcam pixels), through the product's V4l2Source, FrameReader and loop.

    .venv/bin/python bench/webcam.py [--n 20] [--levels medium,hard]

Time is the webcam's (frame n at n / fps): decode time costs no frames here, so this measures what
the mode choice, the crop and the exposure give, not the CPU (bench/camera.py runs the daemon in
real time). A presentation: the phone appears at 0.1 s; counted until its first correct read, up
to 2 s. Wrong reads: a decoded text other than the card shown."""

from __future__ import annotations

import argparse
import random
import statistics

from agent.capture.v4l2 import V4l2Source
from agent.config import CameraConfig
from agent.decode import FrameReader
from agent.sim import camera as phys
from agent.sim.payloads import bhyt
from agent.sim.webcam import UVC_1080, Webcam

APPEARS = 0.1


def presentation(seed: int, level: str, control: str) -> tuple[float | None, int, list[float]]:
    """(seconds from the phone appearing to its first correct read or None, wrong reads, ms/frame)."""
    ph = phys.Phone(bhyt(random.Random(seed)), APPEARS, 3.0, level, seed)
    cam = Webcam(UVC_1080, [ph], seed=seed)
    src = V4l2Source(CameraConfig(source="v4l2", control=control), factory=lambda device: cam)
    src.open()
    reader, wrong, ms = FrameReader(), 0, []
    try:
        while (f := src.read()) is not None and (t := f.t - cam.epoch) <= APPEARS + 2.0:
            res = reader.read(f.gray, view=f.view)
            src.steer(f, res, True)
            ms.append(res.ms)
            wrong += sum(c.text != ph.text for c in res.codes)
            if any(c.text == ph.text for c in res.codes):
                return t - APPEARS, wrong, ms
    finally:
        src.close()
    return None, wrong, ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="presentations per level")
    ap.add_argument("--levels", default="medium,hard")
    args = ap.parse_args()
    print(f"stand-in UVC webcam, virtual clock: {args.n} presentations per level")
    print("| level | control | read within 1 s | within 2 s | median s | wrong reads | decode ms/frame |")
    print("|---|---|---|---|---|---|---|")
    for level in args.levels.split(","):
        for control in ("fixed", "auto"):
            runs = [presentation(seed, level, control) for seed in range(args.n)]
            times = [t for t, _, _ in runs]
            ms = [m for _, _, frame_ms in runs for m in frame_ms]
            within = [sum(t is not None and t <= s for t in times) / args.n for s in (1.0, 2.0)]
            median = statistics.median(t if t is not None else float("inf") for t in times)
            print(f"| {level} | {control} | {within[0]:.0%} | {within[1]:.0%} | "
                  f"{median:.2f} | {sum(w for _, w, _ in runs)} | {statistics.fmean(ms):.1f} |", flush=True)


if __name__ == "__main__":
    main()
