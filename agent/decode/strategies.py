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


def sharpen(gray: np.ndarray, amount: float = 1.5, sigma: float = 2.0) -> np.ndarray:
    """Unsharp mask: restores module edges softened by defocus or hand motion."""
    blurred = cv2.GaussianBlur(gray, (0, 0), sigma)
    return cv2.addWeighted(gray, 1 + amount, blurred, -amount, 0)


def _lut(gamma: float) -> np.ndarray:
    return (255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)


_GAMMA2 = _lut(2.0)


def _same(gray):
    return gray, 1.0


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("plain", _same),
    Strategy("half_global", lambda g: (resize(g, 0.5), 0.5), Binarizer.GlobalHistogram),
    Strategy("blackhat", lambda g: (blackhat(g), 1.0)),
    Strategy("half", lambda g: (resize(g, 0.5), 0.5)),
    Strategy("gamma", lambda g: (cv2.LUT(g, _GAMMA2), 1.0)),
    Strategy("blur_global", lambda g: (cv2.GaussianBlur(g, (3, 3), 0), 1.0), Binarizer.GlobalHistogram),
    Strategy("adaptive", lambda g: (cv2.adaptiveThreshold(
        g, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 15, 3), 1.0)),
    Strategy("clahe", lambda g: (clahe(g, 4.0, 16), 1.0)),
    Strategy("erode", lambda g: (cv2.erode(g, np.ones((3, 3), np.uint8)), 1.0)),
    Strategy("double", lambda g: (resize(g, 2.0), 2.0)),
    Strategy("global", _same, Binarizer.GlobalHistogram),
    Strategy("sharpen", lambda g: (sharpen(g), 1.0)),
    Strategy("enlarge", lambda g: (resize(g, 1.5), 1.5)),
]}

#: Greedy order by codes gained per millisecond, measured on the real photos and simulated
#: medium/hard screens together (bench/decode.py). Strategies not listed are kept for tuning.
DEFAULT_ORDER = ("half_global", "adaptive", "gamma", "blackhat", "double", "erode", "clahe")
