"""Held-phone benchmark: presentations of correlated frames (agent/sim/held.py), read as the
station reads them, by plain zxing-cpp, by the reader before the second stage, and by today's.

    .venv/bin/python bench/held.py [--n 40] [--levels medium,hard] [--pi-factor 4] [--markdown]

Time is simulated the way the station lives it: the camera delivers a frame every 1/15 s; a
decoder busy with one frame misses the frames that arrive meanwhile and takes the newest when it
is done (agent/capture/grabber.py). A decoder's time on a frame is measured on this machine and
multiplied by --pi-factor (a Raspberry Pi 4 is several times slower), so a slow decoder sees
fewer frames. "Read within 1 s" counts presentations whose payload was read from a frame that
was finished by then. Wrong reads (a text other than the payload) are counted separately.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import zxingcpp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.decode import FrameReader  # noqa: E402
from agent.sim.held import presentation  # noqa: E402
from agent.sim.payloads import bhyt, cccd  # noqa: E402

QR = zxingcpp.BarcodeFormat.QRCode


class Plain:
    name = "plain zxing-cpp"

    def reset(self) -> None:
        pass

    def read(self, gray) -> list[str]:
        return [b.text for b in zxingcpp.read_barcodes(gray, formats=QR)]


class Reader:
    def __init__(self, name: str, **kw):
        self.name, self.reader = name, FrameReader(**kw)

    def reset(self) -> None:   # the empty counter between two patients
        self.reader.reset()

    def read(self, gray) -> list[str]:
        return [c.text for c in self.reader.read(gray).codes]


def run_presentation(decoder, frames, payload: str, pi_factor: float) -> tuple[float | None, list[float], int]:
    """(seconds to the first right read or None, host seconds per decoded frame, wrong reads)."""
    decoder.reset()
    times, wrong, i = [], 0, 0
    while i < len(frames):
        f = frames[i]
        t0 = time.perf_counter()
        texts = decoder.read(f.shot.frame)
        spent = time.perf_counter() - t0
        times.append(spent)
        done = f.t + spent * pi_factor
        wrong += sum(t != payload for t in texts)
        if payload in texts:
            return done, times, wrong
        later = [j for j in range(i + 1, len(frames)) if frames[j].t <= done]
        i = later[-1] if later else i + 1
    return None, times, wrong


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="presentations per level")
    ap.add_argument("--levels", default="medium,hard")
    ap.add_argument("--pi-factor", type=float, default=4.0)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    decoders = [Plain(), Reader("reader before (no 2nd stage)", second_stage=False),
                Reader("2nd stage", fuse=False, infer_finders=False),
                Reader("2nd stage + fusion", infer_finders=False),
                Reader("2nd stage + fusion + hidden finders")]
    rows = []
    for level in args.levels.split(","):
        within = {d.name: [0, 0] for d in decoders}
        per_frame = {d.name: [] for d in decoders}
        wrong = {d.name: 0 for d in decoders}
        for k in range(args.n):
            rng = random.Random(f"held-bench:{level}:{k}")
            payload = bhyt(rng) if k % 3 else cccd(rng)
            frames = presentation(payload, level, k)
            for d in decoders:
                t, times, w = run_presentation(d, frames, payload, args.pi_factor)
                within[d.name][0] += t is not None and t <= 1.0
                within[d.name][1] += t is not None and t <= 2.0
                per_frame[d.name] += times
                wrong[d.name] += w
        base = np.mean(per_frame[decoders[0].name])
        base95 = np.percentile(per_frame[decoders[0].name], 95)
        for d in decoders:
            ts = per_frame[d.name]
            rows.append((level, d.name, within[d.name][0] / args.n, within[d.name][1] / args.n,
                         np.mean(ts) * 1000, np.mean(ts) / base, np.percentile(ts, 95) * 1000,
                         np.percentile(ts, 95) / base95, wrong[d.name]))
    head = ("level", "decoder", "read within 1 s", "within 2 s", "mean ms/frame", "vs plain",
            "p95 ms/frame", "vs plain", "wrong reads")
    print(f"held phones: {args.n} presentations per level, {args.pi_factor:g}x Pi factor, 15 fps")
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = (r[0], r[1], f"{r[2]:.0%}", f"{r[3]:.0%}", f"{r[4]:.1f}", f"{r[5]:.2f}x", f"{r[6]:.1f}",
                 f"{r[7]:.2f}x", str(r[8]))
        print(("| " + " | ".join(cells) + " |") if args.markdown else "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
