"""Replay a folder of images (sorted by name) or a video file at a given frame rate."""

from __future__ import annotations

import time
from pathlib import Path

import cv2

from agent.capture.source import Frame, SourceError, now

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"}


class ReplaySource:
    """Frames from files, paced at `fps` (fps <= 0: as fast as read). `loop` starts again at
    the end; otherwise read() returns None after the last frame and the station idles."""

    def __init__(self, path: str | Path, fps: float = 30.0, loop: bool = False):
        self.path, self.fps, self.loop = Path(path), fps, loop
        self._files: list[Path] = []
        self._video: cv2.VideoCapture | None = None
        self._i = 0
        self._next_t = 0.0

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise SourceError(f"no images in {self.path}")
        elif self.path.is_file():
            self._video = cv2.VideoCapture(str(self.path))
            if not self._video.isOpened():
                raise SourceError(f"cannot open video {self.path}")
        else:
            raise SourceError(f"replay path {str(self.path)!r} does not exist")
        self._i, self._next_t = 0, now()

    def _pace(self) -> None:
        if self.fps > 0:
            delay = self._next_t - now()
            if delay > 0:
                time.sleep(delay)
            self._next_t = max(self._next_t + 1 / self.fps, now() - 1 / self.fps)

    def read(self) -> Frame | None:
        gray = self._next_image()
        if gray is None:
            return None
        self._pace()
        self._i += 1
        return Frame(gray, now(), self._i)

    def _next_image(self):
        if self._video is not None:
            ok, img = self._video.read()
            if not ok and self.loop:
                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, img = self._video.read()
            return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if ok else None
        if self._i >= len(self._files):
            if not self.loop or not self._files:
                return None
            self._i = 0
        path = self._files[self._i % len(self._files)]
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise SourceError(f"cannot read image {path}")
        return gray

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
