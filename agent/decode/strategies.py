"""Preprocessing strategies for frames of phone screens, each feeding zxing-cpp.

A strategy turns the grayscale frame into the image zxing-cpp reads (and the factor it was
scaled by, to map corners back). Their order in the cascade comes from measurements on the
real-photo set (bench/decode.py); see DEFAULT_ORDER.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import cv2
import numpy as np
import zxingcpp

Binarizer = zxingcpp.Binarizer


@dataclass(frozen=True)
class Strategy:
    name: str
    #: frame -> (image for zxing, scale of that image relative to the frame)
    prepare: Callable[[np.ndarray], tuple[np.ndarray, float]]
    binarizer: Binarizer = Binarizer.LocalAverage
    #: also look for light-on-dark (dark-mode) codes: a second detection pass, ~35% more time
    invert: bool = True
    #: also let zxing-cpp scan its own downscaled copies (large blurred codes; ~40% more time)
    downscale: bool = True


@lru_cache(maxsize=8)
def _clahe(clip: float, tile: int) -> cv2.CLAHE:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(tile, tile))


def clahe(gray: np.ndarray, clip: float = 2.0, tile: int = 8) -> np.ndarray:
    """Local contrast: lifts a code out of veiling glare or a dark exposure."""
    return _clahe(clip, tile).apply(gray)


def resize(gray: np.ndarray, scale: float) -> np.ndarray:
    """Area averaging when shrinking (kills screen moiré), cubic when enlarging (small codes)."""
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interp)


def blackhat(gray: np.ndarray, size: int = 25) -> np.ndarray:
    """Dark modules against their local maximum: removes glare gradients and shadows."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    hat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    return 255 - cv2.normalize(hat, None, 0, 255, cv2.NORM_MINMAX)


def level(gray: np.ndarray, size: int = 17, floor: int = 30) -> np.ndarray:
    """Each pixel between its neighbourhood's darkest and lightest (morphological min and max over
    `size` pixels, about 3 modules of a code that fills the frame): a lamp's reflection adds a
    smooth veil that leaves only a few levels of contrast between the modules under it (a short
    exposure keeps them out of saturation, not out of the veil); stretched back to full contrast
    they read. Ranges under `floor` are stretched less, so a flat counter stays flat (noise
    stretched to full contrast sends zxing-cpp after false finder patterns)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    lo = cv2.blur(cv2.erode(gray, kernel), (size, size))
    hi = cv2.blur(cv2.dilate(gray, kernel), (size, size))
    return cv2.divide(cv2.subtract(gray, lo), cv2.max(cv2.subtract(hi, lo), floor), scale=255)


def sharpen(gray: np.ndarray, amount: float = 1.5, sigma: float = 2.0) -> np.ndarray:
    """Unsharp mask: restores module edges softened by defocus or hand motion."""
    blurred = cv2.GaussianBlur(gray, (0, 0), sigma)
    return cv2.addWeighted(gray, 1 + amount, blurred, -amount, 0)


def _lut(gamma: float) -> np.ndarray:
    return (255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)


_GAMMA2 = _lut(2.0)


def _same(gray):
    return gray, 1.0


def _half(gray):
    return resize(gray, 0.5), 0.5


_GAMMA_HALF = _lut(0.5)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("plain", _same),
    Strategy("glance", _half, Binarizer.GlobalHistogram, invert=False, downscale=False),
    Strategy("global", _same, Binarizer.GlobalHistogram, downscale=False),
    Strategy("sharpen", lambda g: (sharpen(g), 1.0), invert=False, downscale=False),
    Strategy("half_global", _half, Binarizer.GlobalHistogram),
    Strategy("half_blackhat", lambda g: (blackhat(resize(g, 0.5), 13), 0.5), invert=False, downscale=False),
    Strategy("half_clahe", lambda g: (clahe(resize(g, 0.5), 2.0, 8), 0.5), invert=False),
    Strategy("double", lambda g: (resize(g, 2.0), 2.0), downscale=False),
    Strategy("gamma", lambda g: (cv2.LUT(g, _GAMMA2), 1.0), downscale=False),
    Strategy("adaptive", lambda g: (cv2.adaptiveThreshold(
        g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 15, 3), 1.0)),
    Strategy("blackhat", lambda g: (blackhat(g), 1.0), invert=False),
    Strategy("clahe", lambda g: (clahe(g, 4.0, 16), 1.0), invert=False),
    Strategy("median", lambda g: (cv2.medianBlur(g, 5), 1.0), invert=False, downscale=False),
    Strategy("lift", lambda g: (cv2.LUT(g, _GAMMA_HALF), 1.0)),
    Strategy("enlarge", lambda g: (resize(g, 1.5), 1.5), downscale=False),
    Strategy("erode", lambda g: (cv2.erode(g, np.ones((3, 3), np.uint8)), 1.0)),
    Strategy("half", _half, invert=False),
    Strategy("third", lambda g: (resize(g, 1 / 3), 1 / 3), invert=False, downscale=False),
    Strategy("blur_global", lambda g: (cv2.GaussianBlur(g, (3, 3), 0), 1.0), Binarizer.GlobalHistogram),
    Strategy("level", lambda g: (level(g), 1.0), downscale=False),
]}

#: Chosen by bench/tune_order.py: greedy by codes gained per unit of time, simulated under the
#: default budget over the real photos and simulated screens. Strategies not listed are kept
#: for tuning and `decode --strategy`.
DEFAULT_ORDER = ("global", "sharpen", "half_blackhat", "lift", "double", "half_clahe", "clahe")

#: The stream reader's rotation, one strategy per frame: there the cost of a single strategy
#: matters less than reading within a few frames. Enlarging first reads simulated hard and
#: medium presentations soonest: bench/station.py p95 latency 51 ms, against 99 ms with
#: DEFAULT_ORDER as the rotation.
STREAM_ORDER = ("double", "sharpen", "gamma", "global", "half_blackhat", "lift", "clahe")

#: The stream reader's slot on a bracket's short frame (the capture loop marks it in the frame's
#: View, agent/capture/view.py): the modules under a reflection that the short exposure kept out
#: of saturation read once its veil is levelled away. (Also on every other frame that shows a
#: reflection, without bracketing, it cost the held-phone benchmark 15-20% of decode time and a
#: few points: bench/README.md.)
GLARE_STRATEGY = "level"
