"""Guidance benchmark: of the presentations the station could not read but located a code in, the
share whose guidance reason (agent/decode/guidance.py) names the simulator's true cause.

    .venv/bin/python bench/guidance.py [--n 30] [--frames 12] [--markdown]

Each presentation is a phone held up with one cause of failure made strong and the rest benign,
rendered by agent/sim/screen.py (the held-phone simulator's screen, optics and sensor; hand
tremor between frames as in agent/sim/held.py):

- `closer`: the code 50-110 px a side (about 1-2 px a module);
- `glare`: one or two large specular reflections over the code;
- `dim`: the screen at 3-15% of its brightness with sensor noise of 4-9 grey levels (a dark
  screen under a camera exposed for the room);
- `still`: a motion smear of 6-18 px.

Each strength is drawn over a range that runs from still readable to not even located, so that
some presentations fall in between (located, not read: the ones guidance is for).

Frames go through the station's stream reader (FrameReader) in order; a presentation is "unread"
when no frame was read and at least one located a candidate. Its reason is the one the station's
TRY_AGAIN would carry: the commonest known reason over its unread frames (Presenter._reason).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.decode import FrameReader  # noqa: E402
from agent.sim.payloads import bhyt  # noqa: E402
from agent.sim.screen import PARAMS, draw_pose, image, screen_of  # noqa: E402

CAUSES = ("closer", "glare", "dim", "still")


def pose_for(cause: str, rng: random.Random, nrng: np.random.Generator):
    """An easy pose (small tilt, good exposure, no reflection, sharp) with one cause made strong."""
    pose = draw_pose(PARAMS["easy"], rng, nrng)
    pose = replace(pose, blobs=[], veil=0.0, defocus=rng.uniform(0.4, 0.7), motion=0, gain=rng.uniform(0.9, 1.1))
    if cause == "closer":
        return replace(pose, side=rng.uniform(50, 110))
    if cause == "glare":
        blobs = []
        for _ in range(rng.randint(1, 2)):
            offset = nrng.normal(0, pose.side / 10, 2)
            blobs.append((rng.randrange(4), offset, pose.side * rng.uniform(0.2, 0.35),
                          pose.side * rng.uniform(0.15, 0.3), rng.uniform(1.2, 2.5)))
        return replace(pose, blobs=blobs, toward=0.3)
    if cause == "dim":
        # a dark screen under a camera exposed for the room: few grey levels, sensor noise on top
        return replace(pose, gain=rng.uniform(0.03, 0.15), noise=rng.uniform(4, 9))
    if cause == "still":
        return replace(pose, motion=rng.randint(6, 18), motion_angle=rng.uniform(0, 180))
    raise ValueError(cause)


def presentation(cause: str, seed: int, frames: int):
    rng = random.Random(f"guidance:{cause}:{seed}")
    nrng = np.random.default_rng(rng.randrange(2**32))
    text = bhyt(rng)
    lum, qr = screen_of(text, "easy", rng)
    pose = pose_for(cause, rng, nrng)
    jitter = np.zeros(2)
    for _ in range(frames):
        jitter = 0.7 * jitter + nrng.normal(0, 1.2, 2)
        yield image(text, lum, qr, replace(pose, target=pose.target + jitter),
                    np.random.default_rng(nrng.integers(2**32))).frame


def reason_of(reasons: Counter) -> str:
    known = [(n, r) for r, n in reasons.items() if r != "unknown"]
    return max(known)[1] if known else "unknown"


def run(n: int, frames: int) -> dict:
    out = {}
    for cause in CAUSES:
        read = unlocated = 0
        given: Counter = Counter()
        for seed in range(n):
            reader, reasons, got = FrameReader(), Counter(), False
            for frame in presentation(cause, seed, frames):
                result = reader.read(frame)
                if result.codes:
                    got = True
                    break
                if result.guidance:
                    reasons[result.guidance] += 1
            if got:
                read += 1
            elif not reasons:
                unlocated += 1
            else:
                given[reason_of(reasons)] += 1
        out[cause] = {"read": read, "unlocated": unlocated, "given": given}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=30, help="presentations per cause")
    p.add_argument("--frames", type=int, default=12, help="frames per presentation (15 fps)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    t0 = time.perf_counter()
    res = run(args.n, args.frames)
    rows, hit, total = [], 0, 0
    for cause, r in res.items():
        unread = sum(r["given"].values())
        ok = r["given"].get(cause, 0)
        hit, total = hit + ok, total + unread
        reasons = ", ".join(f"{k} {v}" for k, v in r["given"].most_common())
        rows.append((cause, args.n, r["read"], r["unlocated"], unread, ok, reasons))
    if args.markdown:
        print(f"{args.n} presentations per cause, {args.frames} frames each\n")
        print("| true cause | presentations | read | nothing located | unread, located | reason = cause | reasons given |")
        print("|---|---|---|---|---|---|---|")
        for cause, n, read, unloc, unread, ok, reasons in rows:
            share = f"{100 * ok / unread:.0f}%" if unread else "-"
            print(f"| {cause} | {n} | {read} | {unloc} | {unread} | {ok} ({share}) | {reasons} |")
        print(f"\nAll causes: the reason matches the true cause in {hit} of {total} unread presentations "
              f"({100 * hit / max(total, 1):.0f}%).")
    else:
        for row in rows:
            print(*row, sep="\t")
        print(f"match {hit}/{total} = {100 * hit / max(total, 1):.1f}%")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
