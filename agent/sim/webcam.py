"""A stand-in UVC webcam as OpenCV's VideoCapture (CAP_V4L2 backend) shows it, for the tests of
agent/capture/v4l2.py and bench/webcam.py: it honours or refuses properties as such a webcam does
and renders frames with the virtual Pi camera's physics (agent/sim/camera.py) at webcam pixels."""

from __future__ import annotations

import time
from collections import deque

import cv2

from agent.capture import v4l2
from agent.sim import camera as phys

RATES = (60, 30, 25, 20, 15, 10, 7.5, 5, 2)


class Webcam:
    """A UVC webcam as cv2.VideoCapture(CAP_V4L2) shows it. `modes`: {(fourcc, (w, h)): max fps}.
    `manual`: "yes", "absent" (no exposure controls: sets return False, gets -1), "ignored" (set says
    yes, nothing changes) or "time ignored" (manual mode, but exposure_time_absolute never moves). A new exposure shows `latency` frames after it was set; frames are on a
    virtual clock (n / fps), stamped like V4L2 buffers (CLOCK_MONOTONIC, CAP_PROP_POS_MSEC)."""

    def __init__(self, modes: dict, phones=(), manual: str = "yes", latency: int = 2, seed: int = 0,
                 max_units: int = 2047):
        self.modes, self.phones, self.manual, self.latency = modes, list(phones), manual, latency
        self.max_units = max_units
        self.fourcc = "YUYV" if any(f == "YUYV" for f, _ in modes) else next(iter(modes))[0]
        self.size = min((s for f, s in modes if f == self.fourcc), key=lambda s: s[0] * s[1])
        self.fps = 30.0
        self._want = list(self.size)
        self.ae = v4l2.AE_APERTURE_PRIORITY
        self.units = 100                  # exposure_time_absolute as read back
        self._ae_us = 10000.0             # the webcam's own auto exposure
        self._manual_us = 10000.0         # what manual frames get
        self._queue: deque = deque()
        self.sets: list[tuple[int, float, bool]] = []
        self.used: list[tuple[int, bool]] = []   # (exposure us each frame was taken with, manual?)
        self.n = 0
        self.epoch = time.monotonic()
        self.optics = phys.Optics(phys.Counter(seed), seed)
        self.released = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        ok = self._set(prop, value)
        self.sets.append((prop, value, ok))
        return ok

    def _set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_FOURCC:
            name = "".join(chr((int(value) >> 8 * i) & 0xFF) for i in range(4))
            if not any(f == name for f, _ in self.modes):
                return False
            self.fourcc = name
            self._snap()
            return True
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            self._want[prop == cv2.CAP_PROP_FRAME_HEIGHT] = int(value)
            self._snap()
            return True
        if prop == cv2.CAP_PROP_FPS:
            top = self.modes[(self.fourcc, self.size)]
            self.fps = min((r for r in RATES if r <= top), key=lambda r: abs(r - value))
            return True
        if prop == cv2.CAP_PROP_BUFFERSIZE:
            return True
        if prop == cv2.CAP_PROP_AUTO_EXPOSURE:
            if self.manual == "absent" or value not in (1, 3):
                return False
            if self.manual in ("yes", "time ignored"):
                if value == 1 and self.ae != 1:
                    self._manual_us = self._ae_us
                self.ae = int(value)
            return True
        if prop == cv2.CAP_PROP_EXPOSURE:
            if self.manual not in ("yes", "time ignored") or self.ae != 1:
                return False             # EBUSY while automatic
            if self.manual == "time ignored":
                return True
            self.units = int(min(max(round(value), 3), self.max_units))   # the driver clamps
            self._queue.append((self.n + self.latency, self.units * 100))
            return True
        return False

    def _snap(self) -> None:
        """The driver's rule: the supported size nearest to the one asked for (this format)."""
        sizes = [s for f, s in self.modes if f == self.fourcc]
        self.size = min(sizes, key=lambda s: abs(s[0] - self._want[0]) + abs(s[1] - self._want[1]))
        self.fps = min(self.fps, self.modes[(self.fourcc, self.size)])

    def get(self, prop: int) -> float:
        return float({cv2.CAP_PROP_FRAME_WIDTH: self.size[0], cv2.CAP_PROP_FRAME_HEIGHT: self.size[1],
                      cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FOURCC: cv2.VideoWriter_fourcc(*self.fourcc),
                      cv2.CAP_PROP_AUTO_EXPOSURE: self.ae,
                      cv2.CAP_PROP_EXPOSURE: -1 if self.manual == "absent"      # OpenCV: no such control
                      else self.units if self.ae == 1 else round(self._ae_us / 100),
                      cv2.CAP_PROP_POS_MSEC: (self.epoch + self.n / self.fps) * 1000}.get(prop, -1))

    def read(self):
        self.n += 1
        t = self.n / self.fps
        while self._queue and self._queue[0][0] <= self.n:
            self._manual_us = self._queue.popleft()[1]
        us = self._manual_us if self.ae == 1 else self._ae_us
        self.used.append((int(us), self.ae == 1))
        mode = phys.Mode(self.size, 2, self.fps)          # 2.8 um pixels: a webcam sensor's
        crop = (0, 0, phys.ARRAY[0], phys.ARRAY[1])
        nits = self.optics.radiance(self.phones, t, mode, crop, self.size, us / 1e6)
        linear = self.optics.expose(nits, mode, crop[2], phys.Exposure(us, 1.0))
        if self.ae != 1:                                   # the webcam's AE, on the whole frame
            mean = float(linear[::8, ::8].mean())
            new = self._ae_us * (0.16 / max(mean, 1e-4)) ** 0.3
            self._ae_us = min(max(new, 100.0), 1e6 / self.fps)
        return True, cv2.cvtColor(phys.tone(linear), cv2.COLOR_GRAY2BGR)

    def release(self) -> None:
        self.released = True


UVC_1080 = {("MJPG", (3840, 2160)): 5, ("YUYV", (3840, 2160)): 1, ("MJPG", (1920, 1080)): 30,
            ("YUYV", (1920, 1080)): 5, ("MJPG", (1280, 720)): 30, ("YUYV", (1280, 720)): 10,
            ("YUYV", (640, 480)): 30}
