"""Find a QR code zxing-cpp cannot locate because a reflection hides one of its three finder
patterns: find the finder patterns ourselves, and where two of them (and the timing pattern
between them) are visible, infer the third, then hand the symbol to the second stage (grid.py).

A finder pattern is a dark 7x7 square ring around a dark 3x3 core: in a binarised frame, a
contour holding a contour holding a contour, with area ratios near 49 : 25 : 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.decode import grid, qrspec

MAX_FINDERS = 12
MAX_HYPOTHESES = 3


@dataclass(frozen=True)
class Finder:
    centre: np.ndarray      # x, y in frame pixels
    module: float           # module size in pixels


def find_finders(gray: np.ndarray, scale: float = 0.5) -> list[Finder]:
    """Finder pattern candidates in a frame (dark-on-light, else light-on-dark), looked for at
    half size: a phone's code has modules of 3 px and more, and the contour walk is what costs."""
    out: list[Finder] = []
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else gray
    small = cv2.GaussianBlur(small, (3, 3), 0)
    block = max(15, (min(small.shape) // 16) | 1)
    for invert in (False, True):
        if invert and len(out) >= 2:
            break
        binary = cv2.adaptiveThreshold(small, 255, cv2.ADAPTIVE_THRESH_MEAN_C,
                                       cv2.THRESH_BINARY if invert else cv2.THRESH_BINARY_INV, block, 10)
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        h = hierarchy[0]
        for i, c in enumerate(contours):
            child = h[i][2]
            if child < 0 or h[child][2] < 0:
                continue
            grandchild = h[child][2]
            a0, a1, a2 = cv2.contourArea(c), cv2.contourArea(contours[child]), cv2.contourArea(contours[grandchild])
            if a0 < 30 or a2 <= 0 or a1 <= 0:
                continue
            if not (1.3 < a0 / a1 < 3.5 and 3.0 < a0 / a2 < 11.0):
                continue
            x, y, w, hh = cv2.boundingRect(c)
            if not 0.4 < w / max(hh, 1) < 2.5:
                continue
            m = cv2.moments(contours[grandchild])
            if m["m00"] <= 0:
                continue
            centre = np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]], np.float32) / scale
            out.append(Finder(centre, float(np.sqrt(a0)) / 7.0 / scale))
    # one per place (the two polarities and nested matches find the same finder)
    kept: list[Finder] = []
    for f in sorted(out, key=lambda f: -f.module):
        if all(np.linalg.norm(f.centre - k.centre) > 2 * k.module for k in kept):
            kept.append(f)
    return kept[:MAX_FINDERS]


def _corners(tl: np.ndarray, tr: np.ndarray, bl: np.ndarray, n: int) -> np.ndarray:
    """Outer corners of a symbol of n modules from its three finder centres (affine)."""
    src = np.array([[3.5, 3.5], [n - 3.5, 3.5], [3.5, n - 3.5]], np.float32)
    a = cv2.getAffineTransform(src, np.array([tl, tr, bl], np.float32))
    pts = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.float32)
    return (pts @ a[:, :2].T + a[:, 2]).astype(np.float32)


def _rot(v: np.ndarray, sign: int) -> np.ndarray:
    return np.array([-v[1], v[0]], np.float32) * sign


def hypotheses(finders: list[Finder]) -> list[tuple[np.ndarray, int]]:
    """(corners, version) of every symbol two finders of a similar size could belong to, with the
    third finder where a reflection may hide it: the pair as a side (the third at either end, on
    either side) or as the diagonal."""
    out = []
    for i, a in enumerate(finders):
        for b in finders[i + 1:]:
            if max(a.module, b.module) / min(a.module, b.module) > 1.4:
                continue
            m = (a.module + b.module) / 2
            d = b.centre - a.centre
            dist = float(np.linalg.norm(d))
            for diagonal in (False, True):
                span = dist / np.sqrt(2) if diagonal else dist   # centre to centre along a side
                n_est = span / m + 7
                version = int(round((n_est - 17) / 4))
                if not 1 <= version <= 40:
                    continue
                for v in {version, max(1, version - 1), min(40, version + 1)}:
                    n = qrspec.size_of(v)
                    if diagonal:   # a = top-right, b = bottom-left (or the other way), top-left inferred
                        mid = (a.centre + b.centre) / 2
                        for sign in (1, -1):
                            tl = mid + _rot(d, sign) / 2
                            out.append((_corners(tl, a.centre, b.centre, n), v))
                            out.append((_corners(tl, b.centre, a.centre, n), v))
                    else:          # a side: a and b are top-left and top-right (or top-left and bottom-left)
                        for p, q in ((a.centre, b.centre), (b.centre, a.centre)):
                            for sign in (1, -1):
                                third = p + _rot(q - p, sign)
                                out.append((_corners(p, q, third, n), v))
                                out.append((_corners(p, third, q, n), v))   # the pair was TL and BL
    return out


def infer(gray: np.ndarray, limit: int = MAX_HYPOTHESES) -> list[tuple[np.ndarray, grid.Grid, bytes | None]]:
    """(corners, grid, payload or None) of the best-fitting inferred symbols, most plausible first;
    stops at the first that decodes."""
    finders = find_finders(gray)
    if len(finders) < 2:
        return []
    cands = hypotheses(finders)
    if not cands:
        return []
    h, w = gray.shape
    inside = [(c, v) for c, v in cands if c[:, 0].min() > -w / 2 and c[:, 1].min() > -h / 2
              and c[:, 0].max() < 1.5 * w and c[:, 1].max() < 1.5 * h]
    by_version: dict[int, list[np.ndarray]] = {}
    for c, v in inside:
        by_version.setdefault(v, []).append(c)
    scored = []
    for v, cs in by_version.items():   # one remap per version for all its hypotheses
        scored += [(float(f), c, v) for f, c in zip(grid._fits(gray, cs, v), cs)]
    scored.sort(key=lambda s: -s[0])
    out = []
    for fit, corners, v in scored[:limit]:
        if fit < 0.45:
            break
        g = grid.sample(gray, corners, v)
        if g.pattern_errors > grid.MAX_PATTERN_ERRORS:
            continue
        raw = grid.decode_grid(g)
        out.append((g.corners if g.corners is not None else corners, g, raw))
        if raw is not None:
            break
    return out
