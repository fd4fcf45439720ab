"""The second stage: read a QR code that zxing-cpp located but could not decode, bit by bit.

zxing-cpp gives the symbol's corners (and, for a failed read, often its version, error
correction level and mask). Here the module grid is sampled through a homography, refined on
the fixed patterns the standard puts in every symbol, each module becomes a soft value with a
confidence, and modules under saturated glare or of low confidence become *erasures*: a
Reed-Solomon block corrects twice as many erasures as errors. A wrong read is worse than none:
every block must decode with a margin to spare, and the segments and padding must be exactly
what the standard allows.

`Grid` is the sampled soft grid; `FusedGrid` accumulates grids of the same code over the frames
of one presentation, so a module hidden by a reflection in one frame is read in another.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from reedsolo import ReedSolomonError, RSCodec

from agent.capture.view import SATURATED
from agent.decode import qrspec

GLARE_FLOOR = 160
#: |value - threshold| / local contrast below this: the module is an erasure
LOW_CONFIDENCE = 0.06
#: Reed-Solomon correction capacity kept unused in every block (2 x errors + erasures <= ecc - margin)
MARGIN = 2
#: A grid whose fixed patterns disagree more than this with the standard is not worth decoding
MAX_PATTERN_ERRORS = 0.25

_codecs: dict[int, RSCodec] = {}


def _codec(ecc: int) -> RSCodec:
    if ecc not in _codecs:
        _codecs[ecc] = RSCodec(ecc, nsize=255, fcr=0, prim=0x11D, generator=2, c_exp=8)
    return _codecs[ecc]


@dataclass
class Grid:
    """Soft module values of one symbol: `dark` in [0, 1] (1 = certainly dark), `weight` in [0, 1]
    (0 = an erasure: glare, or no contrast)."""
    version: int
    dark: np.ndarray
    weight: np.ndarray
    pattern_errors: float = 1.0
    corners: np.ndarray | None = None   # where the grid was sampled, refined

    @property
    def size(self) -> int:
        return self.dark.shape[0]


def _homography(corners: np.ndarray, n: int) -> np.ndarray:
    src = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.float32)
    return cv2.getPerspectiveTransform(src, corners.astype(np.float32))


def _values(gray: np.ndarray, hs: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Image intensity (bilinear) at the centres of the given modules, through each of the
    homographies `hs` (T x 3 x 3): T x K values in one remap."""
    src = np.stack([cols + 0.5, rows + 0.5, np.ones(len(rows))], 0)            # 3 x K
    p = hs @ src                                                              # T x 3 x K
    mx, my = (p[:, 0] / p[:, 2]).astype(np.float32), (p[:, 1] / p[:, 2]).astype(np.float32)
    return cv2.remap(gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)


def _fits(gray: np.ndarray, trials: list[np.ndarray], version: int) -> np.ndarray:
    """How well the fixed patterns sampled through each set of corners match the standard's: the
    correlation of module intensities with the expected light/dark (1 = perfect). One remap for
    all trials: the refinement evaluates dozens of them."""
    n = qrspec.size_of(version)
    _, expected, known = qrspec.function_pattern(version)
    rows, cols = np.nonzero(known)
    values = _values(gray, np.stack([_homography(c, n) for c in trials]), rows, cols)
    target = np.where(expected[rows, cols], -1.0, 1.0)
    centred = values - values.mean(1, keepdims=True)
    sd = values.std(1)
    return np.where(sd > 1e-3, (centred * target).mean(1) / np.maximum(sd, 1e-3), -1.0)


MOVES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1)], np.float32)


def refine(gray: np.ndarray, corners: np.ndarray, version: int) -> np.ndarray:
    """Move the corners by fractions of a module while the fixed patterns fit better (zxing-cpp's
    corners are estimates: the bottom-right one has no finder, and a failed read often means one
    of them is off by a module). Greedy: the best of the 16 single-corner moves, repeated."""
    n = qrspec.size_of(version)
    best = corners.astype(np.float32).copy()
    score = float(_fits(gray, [best], version)[0])
    module = float(np.linalg.norm(best[1] - best[0])) / n
    for step in (1.0, 0.5, 0.25):
        for _ in range(8):
            trials = []
            for k in range(4):
                for move in MOVES:
                    t = best.copy()
                    t[k] += move * step * module
                    trials.append(t)
            scores = _fits(gray, trials, version)
            i = int(np.argmax(scores))
            if scores[i] <= score + 1e-4:
                break
            best, score = trials[i], float(scores[i])
    return best


def _sample(gray: np.ndarray, h: np.ndarray, n: int) -> np.ndarray:
    """Intensity at the centre of every module."""
    rows, cols = np.indices((n, n))
    return _values(gray, h[None], rows.ravel(), cols.ravel()).reshape(n, n)


def _soft(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dark probability and confidence weight from a local threshold in module space."""
    k = np.ones((5, 5), np.uint8)
    lo = cv2.blur(cv2.erode(mean, k, borderType=cv2.BORDER_REPLICATE), (3, 3))
    hi = cv2.blur(cv2.dilate(mean, k, borderType=cv2.BORDER_REPLICATE), (3, 3))
    contrast = np.maximum(hi - lo, 1.0)
    margin = ((hi + lo) / 2 - mean) / contrast          # > 0: dark
    dark = np.clip(0.5 + margin, 0.0, 1.0)
    weight = np.clip(np.abs(margin) / 0.5, 0.0, 1.0)
    # glare: saturated where even the darkest modules around are bright (a light module of a bright
    # screen is saturated too, but has dark neighbours)
    glare = (mean >= SATURATED) & (lo >= GLARE_FLOOR)
    # and its rim: modules half under the highlight read light with false confidence
    glare = cv2.dilate(glare.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    weight[glare | (contrast < 12) | (np.abs(margin) < LOW_CONFIDENCE)] = 0.0
    return dark, weight


def _pattern_errors(dark: np.ndarray, weight: np.ndarray, version: int) -> float:
    _, expected, known = qrspec.function_pattern(version)
    sure = known & (weight > 0)
    if sure.sum() < 20:
        return 1.0
    return float(((dark[sure] > 0.5) != expected[sure]).mean())


def sample(gray: np.ndarray, corners: np.ndarray, version: int, refine_grid: bool = True) -> Grid:
    """The soft grid of a symbol whose outer corners are `corners` (top-left, top-right,
    bottom-right, bottom-left in symbol orientation), refined on its fixed patterns."""
    n = qrspec.size_of(version)
    corners = np.asarray(corners, np.float32)
    if refine_grid:
        corners = refine(gray, corners, version)
    dark, weight = _soft(_sample(gray, _homography(corners, n), n))
    return Grid(version, dark, weight, _pattern_errors(dark, weight, version), corners)


def read_format(grid: Grid) -> tuple[str, int] | None:
    """(ecl, mask) from the two format copies, weighted by confidence; None if neither is close."""
    first, second = qrspec.format_positions(grid.size)
    votes = []
    for copy in (first, second):
        bits = [int(grid.dark[r, c] > 0.5) for r, c in copy]
        sure = sum(grid.weight[r, c] > 0 for r, c in copy)
        votes.append((qrspec.decode_format(bits), sure))
    joint = [int((grid.dark[a] * grid.weight[a] + grid.dark[b] * grid.weight[b]) /
                 max(grid.weight[a] + grid.weight[b], 1e-6) > 0.5) for a, b in zip(first, second)]
    votes.append((qrspec.decode_format(joint), 15))
    good = [(v, s) for v, s in votes if v[2] <= 3 and s >= 10]
    if not good:
        return None
    (ecl, mask, _), _ = min(good, key=lambda vs: (vs[0][2], -vs[1]))
    return ecl, mask


def decode_grid(grid: Grid, ecl: str | None = None, mask: int | None = None,
                margin: int = MARGIN) -> bytes | None:
    """The payload bytes, or None. Format from zxing-cpp when given, else read from the grid."""
    if grid.pattern_errors > MAX_PATTERN_ERRORS:
        return None
    if ecl is None or mask is None:
        fmt = read_format(grid)
        if fmt is None:
            return None
        ecl, mask = fmt
    version, n = grid.version, grid.size
    rows, cols = qrspec.codeword_order(version)
    bits = (grid.dark[rows, cols] > 0.5) ^ qrspec.mask_grid(mask, n)[rows, cols]
    erased_bits = grid.weight[rows, cols] <= 0
    total = qrspec.raw_data_modules(version) // 8
    bits, erased_bits = bits[:total * 8].reshape(total, 8), erased_bits[:total * 8].reshape(total, 8)
    codewords = np.packbits(bits, axis=1)[:, 0].tolist()
    erased_cw = erased_bits.any(1)
    uncertainty = (1 - grid.weight[rows, cols][:total * 8].reshape(total, 8)).sum(1)
    blocks = qrspec.deinterleave(codewords, version, ecl)
    where = qrspec.block_index(version, ecl)
    erase: list[list[tuple[float, int]]] = [[] for _ in blocks]
    for k, (b, i) in enumerate(where):
        if erased_cw[k]:
            erase[b].append((float(uncertainty[k]), i))
    ecc = qrspec.ECC_PER_BLOCK[ecl][version]
    data = bytearray()
    for block, erased in zip(blocks, erase):
        out = _correct(bytearray(block), ecc, erased, margin)
        if out is None:
            return None
        data += out[:len(block) - ecc]
    try:
        return qrspec.parse_segments(bytes(data), version)
    except qrspec.SegmentError:
        return None


def _correct(block: bytearray, ecc: int, erased: list[tuple[float, int]], margin: int) -> bytes | None:
    """Correct one block with errors and erasures, keeping `margin` of the capacity unused.
    Too many erasures: the most uncertain ones are kept, up to what leaves room for the margin."""
    budget = ecc - margin
    erased = sorted(erased, reverse=True)
    attempts = [sorted(i for _, i in erased[:budget])]
    if erased:
        attempts.append([])        # as hard values: erasures may have been read right after all
    for positions in attempts:
        try:
            _, full, errata = _codec(ecc).decode(block, erase_pos=positions or None)
        except (ReedSolomonError, ValueError, IndexError, ZeroDivisionError):
            continue
        errors = len(set(errata) - set(positions))
        if 2 * errors + len(positions) <= budget:
            return bytes(full)
    return None


class FusedGrid:
    """Soft values of one code accumulated over the frames of a presentation, each module weighted
    by its confidence in each frame (a module under glare in one frame counts for nothing there)."""

    def __init__(self, version: int):
        n = qrspec.size_of(version)
        self.version = version
        self.dark_sum = np.zeros((n, n), np.float32)
        self.weight_sum = np.zeros((n, n), np.float32)
        self.frames = 0

    def add(self, grid: Grid) -> None:
        if grid.version != self.version or grid.pattern_errors > MAX_PATTERN_ERRORS:
            return
        self.dark_sum += grid.dark * grid.weight
        self.weight_sum += grid.weight
        self.frames += 1

    def grid(self) -> Grid:
        w = np.maximum(self.weight_sum, 1e-6)
        dark = self.dark_sum / w
        weight = np.where(self.weight_sum > 0, np.clip(np.abs(dark - 0.5) * 2, 0, 1), 0.0)
        weight[np.abs(dark - 0.5) < LOW_CONFIDENCE / 2] = 0.0
        return Grid(self.version, dark, weight.astype(np.float32),
                    _pattern_errors(dark, weight, self.version))
