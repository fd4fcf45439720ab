"""Is anything happening in front of the camera? The counter is empty most of the day: an idle
scene is decoded at a low rate to keep the Pi cool, a changing one at every frame."""

from __future__ import annotations

import cv2
import numpy as np

from agent.capture.source import Frame

#: mean absolute difference of 64x36 thumbnails, in grey levels, that counts as movement
MOTION_THRESHOLD = 3.0


class SceneGate:
    def __init__(self, idle_after_s: float, idle_fps: float, threshold: float = MOTION_THRESHOLD):
        self.idle_after_s, self.idle_fps, self.threshold = idle_after_s, idle_fps, threshold
        self._thumb: np.ndarray | None = None
        self._active_until = -1e9
        self._last_decode_t = -1e9
        #: when the scene last changed (not held by a code in view): is anybody at the counter?
        self.moved_at = -1e9

    def active(self, frame: Frame) -> bool:
        """Something moved in front of the camera recently (or a code is being read)."""
        thumb = cv2.resize(frame.gray, (64, 36), interpolation=cv2.INTER_AREA).astype(np.int16)
        if self._thumb is None or self._thumb.shape != thumb.shape or \
                np.abs(thumb - self._thumb).mean() > self.threshold:
            self._active_until = frame.t + self.idle_after_s
            self.moved_at = frame.t
        self._thumb = thumb
        return frame.t < self._active_until

    def admit(self, frame: Frame) -> tuple[bool, bool]:
        """(decode this frame?, is the scene active?): an idle scene only at idle_fps."""
        active = self.active(frame)
        if not active and frame.t - self._last_decode_t < 1.0 / self.idle_fps:
            return False, False
        self._last_decode_t = frame.t
        return True, active

    def hold(self, t: float) -> None:
        """A code is in view (read or not): stay active, the patient is still there."""
        self._active_until = t + self.idle_after_s
