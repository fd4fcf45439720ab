"""A USB webcam through OpenCV's V4L2 backend."""

from __future__ import annotations

import cv2

from agent.capture.source import Frame, SourceError, now
from agent.config import CameraConfig


class V4l2Source:
    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self._cap: cv2.VideoCapture | None = None
        self._i = 0

    def open(self) -> None:
        cap = cv2.VideoCapture(self.cfg.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"cannot open /dev/video{self.cfg.device}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError("camera not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            raise SourceError(f"/dev/video{self.cfg.device} returned no frame (unplugged?)")
        self._i += 1
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return Frame(gray, now(), self._i)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
