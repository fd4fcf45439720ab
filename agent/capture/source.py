"""The frame-source interface: a grayscale frame and the time it was captured.

Every camera hides behind this, so the station (and its tests) never touch a camera API.
The sources import this module; the one that chooses among them is agent/capture/factory.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from agent.capture.view import View


class SourceError(Exception):
    """The camera failed or disappeared; the grabber retries with backoff."""


@dataclass(frozen=True)
class Frame:
    gray: np.ndarray      # uint8, H x W
    t: float              # capture time, time.monotonic() seconds
    index: int = 0
    #: the crop and exposure it was taken with (picamera2 metadata); None when the source
    #: cannot say
    view: View | None = None


class FrameSource(Protocol):
    def open(self) -> None: ...
    def read(self) -> Frame | None:
        """The next frame; None when a finished replay has nothing more (not an error)."""
    def close(self) -> None: ...
    # optional: `steer(frame, result, active, handled)`, a source that controls its camera from what
    # the decoder located and lets go of the codes the station has handled (agent/capture/steer.py);
    # `control_status()` for status and snapshots


def now() -> float:
    return time.monotonic()
