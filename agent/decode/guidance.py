"""Why a code was located but not read, from what can be measured of the candidate: what to tell
the patient ("closer", "glare", "dim", "still") instead of a bare amber blink.

Each property is measured inside the candidate's corners and compared with the level at which
reading fails (thresholds set on constructed frames and checked on bench/guidance.py's simulated
presentations): a code too small is `closer` whatever else is wrong; otherwise the property
furthest past its level is the reason, `unknown` when none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.capture.view import SATURATED

REASONS = ("closer", "glare", "dim", "still", "unknown")

#: Modules a phone's card code has when zxing-cpp did not say its version (a BHYT payload of
#: 150-250 bytes at EC level M is version 8-10: 49-57 modules).
TYPICAL_MODULES = 49
#: Below this many pixels per module a code is too small to sample reliably: move it closer.
CLOSER_PX = 2.6
#: A share of saturated pixels (>= SATURATED) inside the code beyond this: a reflection.
GLARE_REASON_SHARE = 0.04
#: Dark and light modules closer than this (5th to 95th percentile, grey levels): too dim.
DIM_CONTRAST = 70.0
#: Light modules darker than this: a dark screen (brightness turned down).
DARK_LIGHT = 95.0
#: An edge wider than this share of a module (grey ramp from dark to light): smeared.
STILL_EDGE = 0.5
#: The edge width the gradient operator itself measures on a perfectly sharp step (pixels).
SHARP_EDGE_PX = 1.5
#: The largest crop measured (pixels a side): enough for the statistics, cheap on a Pi.
MAX_SIDE = 320


@dataclass(frozen=True)
class Measures:
    """What was measured of one candidate."""
    module_px: float        # pixels per module
    saturated: float        # share of pixels at or above SATURATED
    contrast: float         # 95th - 5th percentile grey level
    light: float            # 95th percentile grey level, ignoring saturated pixels
    edge_modules: float     # width of a dark-to-light edge, in modules

    def scores(self) -> dict[str, float]:
        """Each reason's measure as a multiple of its limit (> 1: past it)."""
        return {
            "closer": CLOSER_PX / max(self.module_px, 1e-3),
            "glare": self.saturated / GLARE_REASON_SHARE,
            "dim": max(DIM_CONTRAST / max(self.contrast, 1.0), DARK_LIGHT / max(self.light, 1.0)),
            "still": self.edge_modules / STILL_EDGE,
        }

    def reason(self) -> str:
        """`closer` first when the code is too small (nothing else can be judged on a few pixels
        a module), else the measure furthest past its limit."""
        scores = self.scores()
        if scores["closer"] > 1.0:
            return "closer"
        best = max(scores, key=scores.__getitem__)
        return best if scores[best] > 1.0 else "unknown"


def measure(gray: np.ndarray, corners: Sequence[Sequence[float]], modules: int | None = None) -> Measures | None:
    """Measure the candidate at `corners` (TL, TR, BR, BL in frame pixels) of `modules` a side
    (None: a typical card's); None when it lies outside the frame or is degenerate."""
    pts = np.array(corners, np.float32).reshape(4, 2)
    if not np.isfinite(pts).all():
        return None
    side = float(np.mean([np.linalg.norm(pts[i] - pts[(i + 1) % 4]) for i in range(4)]))
    if side < 4:
        return None
    h, w = gray.shape[:2]
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1, (w, h))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    crop = gray[y0:y1, x0:x1]
    mask = np.zeros(crop.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(pts - (x0, y0)).astype(np.int32), 1)
    inside = crop[mask > 0]
    if inside.size < 16:
        return None
    module_px = side / (modules if modules and 0 < modules <= 177 else TYPICAL_MODULES)
    saturated = float(np.mean(inside >= SATURATED))
    p5, p95 = (float(v) for v in np.percentile(inside, (5, 95)))
    unsat = inside[inside < SATURATED]
    light = float(np.percentile(unsat, 95)) if unsat.size >= 16 else p95
    # edge width: contrast over the steep gradients (a step blurred over k pixels rises C/k a
    # pixel; the 90th percentile: a smear leaves a few edges along its direction sharp);
    # measured on the unsaturated inside, where a reflection adds no edges of its own
    scale = min(1.0, MAX_SIDE / max(crop.shape))
    small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else crop
    small_mask = cv2.resize(mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
    small_mask = cv2.erode(small_mask, np.ones((3, 3), np.uint8)) & (small < SATURATED - 10)
    f = small.astype(np.float32)
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) / 8, cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) / 8
    grad = np.hypot(gx, gy)[small_mask > 0]
    steep = float(np.percentile(grad, 90)) if grad.size >= 16 else 0.0
    unsat_contrast = (float(np.percentile(unsat, 95) - np.percentile(unsat, 5)) if unsat.size >= 16 else p95 - p5)
    edge_px = max(unsat_contrast / max(steep, 1e-3) - SHARP_EDGE_PX, 0.0) / scale
    return Measures(round(module_px, 2), round(saturated, 4), round(p95 - p5, 1), round(light, 1),
                    round(edge_px / max(module_px, 1e-3), 2))


def assess(gray: np.ndarray, located: Sequence[tuple[Sequence[Sequence[float]], int | None]]) -> str | None:
    """The reason for the first measurable candidate of a frame (zxing-cpp's order: the most
    code-like first), or None when there is none."""
    for corners, modules in located:
        m = measure(gray, corners, modules)
        if m is not None:
            return m.reason()
    return None
