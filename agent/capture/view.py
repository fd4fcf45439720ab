"""The contract between capture and decode: what a frame was taken with (`View`), and what the
decoder saw in it that the capture loop acts on (`Seen`).

Both sides import this module and nothing of each other: a source stamps each frame with its
`View` (from the camera's own metadata), the decoder maps modules between frames of different
crops with it and reads a bracket's short frames differently, and `Seen.of` turns a decode result
into the boxes the loop follows. Coordinates: a View maps stream pixels to the sensor's pixel array
(libcamera's ScalerCrop convention); every box in `Seen` is in the frame's stream pixels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.status_types import ViewStatus

#: An 8-bit Y value at or above this is taken as clipped: the ISP's tone curve leaves the last few
#: codes to highlights already over full scale, and noise keeps a clipped reflection from sitting
#: exactly at 255. One figure for the loop (glare, bracketing), the decoder's grid and guidance and
#: the snapshot's drawing, so they all call the same pixels saturated.
SATURATED = 250

#: A located candidate whose QR version zxing-cpp read with at least this many modules a side is a
#: whole model 2 code, not a part of one (a Micro QR candidate, 11-17 modules, is often one finder
#: of a larger code)
WHOLE_MODULES = 21


@dataclass(frozen=True)
class View:
    """What one frame was taken with (from the camera's own metadata, not what was asked)."""
    crop: tuple[int, int, int, int]       # ScalerCrop, array pixels
    size: tuple[int, int]                 # stream width, height
    exposure_us: int = 0
    gain: float = 1.0
    #: a bracket's short exposure (the capture loop's: CaptureLoop.is_short), which the decoder
    #: reads with the reflection's veil levelled away
    short: bool = False

    def to_array(self, pts: np.ndarray) -> np.ndarray:
        x, y, w, h = self.crop
        return np.asarray(pts, np.float64) * (w / self.size[0], h / self.size[1]) + (x, y)

    def from_array(self, pts: np.ndarray) -> np.ndarray:
        x, y, w, h = self.crop
        return (np.asarray(pts, np.float64) - (x, y)) * (self.size[0] / w, self.size[1] / h)

    @property
    def scale(self) -> float:
        """Array pixels per stream pixel."""
        return self.crop[2] / self.size[0]

    def status(self) -> ViewStatus:
        return ViewStatus(list(self.crop), self.exposure_us, round(self.gain, 2))


@dataclass(frozen=True)
class Seen:
    """What the decoder saw in one frame that the capture loop acts on (corners, stream pixels)."""
    #: codes read that the station has not handled yet
    read: list[np.ndarray] = field(default_factory=list)
    #: located but not read (zxing-cpp's candidates and the fusion's tracks)
    located: list[np.ndarray] = field(default_factory=list)
    #: of the located, those whose QR version zxing-cpp read: whole codes (see WHOLE_MODULES)
    whole: list[np.ndarray] = field(default_factory=list)
    #: codes read that the station has handled (checked in, already read, rejected): let go
    handled: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def of(cls, result: Any, handled: Iterable[str] = ()) -> "Seen":
        """From a DecodeResult (agent.decode; None: an idle-skipped frame, nothing seen) and the
        texts of its codes that the station has handled."""
        if result is None:
            return cls()
        done = set(handled)
        return cls([np.array(c.corners, np.float64) for c in result.codes if c.text not in done],
                   [np.asarray(p, np.float64) for p in result.unread],
                   whole_codes(result.located),
                   [np.array(c.corners, np.float64) for c in result.codes if c.text in done])


def whole_codes(located: list[tuple[Any, int | None]]) -> list[np.ndarray]:
    """Of the decoder's located candidates ((corners, modules a side or None): DecodeResult.located),
    the corners of those that are whole QR codes: zxing-cpp read their version from the symbol."""
    return [np.asarray(c, np.float64) for c, n in located if n is not None and n >= WHOLE_MODULES]
