"""A capture thread where the newest frame wins: the decoder never works on a stale frame.

A camera that fails or disappears is closed, reported as a fault, and reopened with backoff;
the station keeps running meanwhile.
"""

from __future__ import annotations

import logging
import threading

from agent.capture.source import Frame, FrameSource, SourceError
from agent.status_types import CameraStatus
from agent.worker import Worker, backoff

log = logging.getLogger(__name__)


class Grabber(Worker):
    """A camera read that never returns stops the beats: the watchdog then restarts the service."""

    stall_s = 60.0

    def __init__(self, source: FrameSource, backoff: tuple[float, float] = (0.5, 30.0)):
        super().__init__("capture")
        self.source = source
        self.backoff_min, self.backoff_max = backoff
        self.camera_fault: str | None = None   # set while the camera is failing
        self.finished = False               # a replay without loop has ended
        self.frames = 0
        self.dropped = 0                    # frames replaced before the decoder took them
        self._latest: Frame | None = None
        self._cond = threading.Condition()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def get(self, timeout: float = 0.5) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout`; None if there is none."""
        with self._cond:
            if self._latest is None:
                self._cond.wait(timeout)
            frame, self._latest = self._latest, None
            return frame

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = frame
            self.frames += 1
            self._cond.notify_all()

    def work(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.source.open()
                if self.camera_fault:
                    log.warning("camera back after fault: %s", self.camera_fault)
                self.camera_fault = None
                attempt = 0
                while not self.stopping.is_set():
                    self.beat()
                    frame = self.source.read()
                    if frame is None:
                        self.finished = True
                        self.wait(0.2)  # replay ended: idle until stopped
                        continue
                    self._put(frame)
            except Exception as exc:  # noqa: BLE001 - any camera failure is retried
                message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                if self.camera_fault != message:
                    log.error("camera fault: %s; retrying", message)
                self.camera_fault = message
            finally:
                try:
                    self.source.close()
                except Exception:  # noqa: BLE001
                    pass
            self.wait(backoff(attempt, self.backoff_min, self.backoff_max, jitter=False))
            attempt += 1

    def camera_status(self, source: str) -> CameraStatus:
        """The `camera` section's figures; `source`: the source's name in the config."""
        return CameraStatus(source, fault=self.fault, frames=self.frames, finished=self.finished)

    @property
    def fault(self) -> str | None:
        """The camera's fault, else the worker's own (crashed, stuck)."""
        return self.camera_fault or super().fault
