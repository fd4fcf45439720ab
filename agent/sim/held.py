"""Presentations of a phone held up to the counter camera: correlated frames, not independent
chances.

A phone held still has the same reflection, exposure and focus in every frame: the lamp's
highlight sits on the same modules, hand tremor moves the image by a few pixels. Only when no beep
comes does the patient tilt the phone (after about a second), and then the highlight slides
across the screen (a small tilt moves a specular highlight several times further than the phone
moves) while the motion smears the image a little. Reflections over a finder pattern are common.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np

from agent.sim.screen import PARAMS, Shot, draw_pose, image, screen_of

FPS = 15.0
SECONDS = 2.5
TILT_AFTER_S = 1.0
#: Share of presentations whose strongest reflection sits on a finder pattern.
FINDER_GLARE = 0.35


@dataclass
class HeldFrame:
    t: float
    shot: Shot


def presentation(text: str, level: str = "medium", seed: int = 0, *, fps: float = FPS,
                 seconds: float = SECONDS, tilt_after_s: float = TILT_AFTER_S) -> list[HeldFrame]:
    """The frames a counter camera sees while one patient holds up one phone."""
    rng = random.Random(f"held:{level}:{seed}")
    nrng = np.random.default_rng(rng.randrange(2**32))
    lum, qr = screen_of(text, level, rng)
    pose = draw_pose(PARAMS[level], rng, nrng)
    if pose.blobs and rng.random() < FINDER_GLARE:
        corner = rng.choice((0, 1, 3))          # a finder's corner (bottom-right has none)
        _, offset, sx, sy, strength = pose.blobs[0]
        pose.blobs[0] = (corner, offset * 0.2, sx, sy, max(strength, 0.8))
        pose = replace(pose, toward=0.8)
    slide = nrng.normal(0, 1, 2)
    slide *= pose.side * rng.uniform(0.4, 0.8) / max(np.linalg.norm(slide), 1e-6)  # px per second of tilt
    tilt_rate = np.deg2rad(rng.uniform(4, 10)) * rng.choice((-1, 1))              # rad per second
    jitter = np.zeros(2)
    frames = []
    for i in range(int(seconds * fps)):
        t = i / fps
        jitter = 0.7 * jitter + nrng.normal(0, 1.2, 2)                           # hand tremor, px
        tilting = max(0.0, t - tilt_after_s)
        moving = t >= tilt_after_s
        frame_pose = replace(pose, target=pose.target + jitter,
                             angle=pose.angle + np.deg2rad(nrng.normal(0, 0.3)),
                             tilt_x=pose.tilt_x + tilt_rate * tilting,
                             motion=max(pose.motion, 3) if moving else pose.motion,
                             motion_angle=float(np.degrees(np.arctan2(slide[1], slide[0]))) if moving
                             else pose.motion_angle)
        shot = image(text, lum, qr, frame_pose, np.random.default_rng(nrng.integers(2**32)),
                     glare_shift=slide * tilting, level=level, seed=seed)
        frames.append(HeldFrame(t, shot))
    return frames
