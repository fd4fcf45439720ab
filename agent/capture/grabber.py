"""A capture thread where the newest frame wins: the decoder never works on a stale frame.

A camera that fails or disappears is closed, reported as a fault, and reopened with backoff;
the station keeps running meanwhile.
"""

from __future__ import annotations

import logging
import threading

from agent.capture.source import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)


class Grabber:
    def __init__(self, source: FrameSource, backoff: tuple[float, float] = (0.5, 30.0)):
        self.source = source
        self.backoff_min, self.backoff_max = backoff
        self.fault: str | None = None       # set while the camera is failing
        self.finished = False               # a replay without loop has ended
        self.frames = 0
        self.dropped = 0                    # frames replaced before the decoder took them
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> "Grabber":
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)

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

    def _run(self) -> None:
        delay = self.backoff_min
        while not self._stop.is_set():
            try:
                self.source.open()
                if self.fault:
                    log.warning("camera back after fault: %s", self.fault)
                self.fault = None
                delay = self.backoff_min
                while not self._stop.is_set():
                    frame = self.source.read()
                    if frame is None:
                        self.finished = True
                        self._stop.wait(0.2)  # replay ended: idle until stopped
                        continue
                    self._put(frame)
            except Exception as exc:  # noqa: BLE001 - any camera failure is retried
                message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
                if self.fault != message:
                    log.error("camera fault: %s; retrying", message)
                self.fault = message
            finally:
                try:
                    self.source.close()
                except Exception:  # noqa: BLE001
                    pass
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff_max)
