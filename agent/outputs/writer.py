"""A supervised writer thread per output device, never in the scan path.

The station queues a line (bounded queue: when full, the oldest is dropped and counted); the
worker opens the device without blocking and writes with a deadline. No host reading (a USB
gadget not enumerated, a serial port nobody opened, a stalled pipe): the line is dropped after
`timeout_s` and the fault is shown; the check-in itself is in the outbox all along.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import time
from typing import Callable

from agent.status_types import WriterStatus
from agent.worker import Worker

log = logging.getLogger(__name__)


class DeviceWriter(Worker):
    stall_s = None   # it idles on its queue

    def __init__(self, name: str, device: str, encode: Callable[[str], list[bytes]], *, timeout_s: float = 5.0,
                 delay_s: float = 0.0, queue_size: int = 32):
        super().__init__(f"output-{name}")
        self.kind, self.device, self.encode = name, device, encode
        self.timeout_s, self.delay_s = timeout_s, delay_s
        self.queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self.sent = self.dropped = 0
        self.device_fault: str | None = None
        #: what a dropped line was, for the log: a check-in's (safe in the outbox), or `output test`'s probe
        self.dropped_note = "the check-in is in the outbox"
        self._fd: int | None = None

    # -- the scan side: never blocks ----------------------------------------------------------

    def send(self, text: str) -> None:
        while True:
            try:
                self.queue.put_nowait(text)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    # -- the worker ------------------------------------------------------------------------------

    def wake(self) -> None:
        self.send("")    # an empty line wakes the worker; it writes nothing

    def work(self) -> None:
        while not self.stopping.is_set():
            try:
                text = self.queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if text:
                self._write(text)

    def finish(self) -> None:
        self._close()

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.device, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _write(self, text: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            chunks = self.encode(text)
        except ValueError as exc:
            self._drop(str(exc))
            return
        try:
            fd = self._open()
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.stopping.is_set():
                        raise TimeoutError(f"no host reading {self.device} for {self.timeout_s:g} s")
                    _, ready, _ = select.select([], [fd], [], min(left, 0.5))
                    if ready:
                        view = view[os.write(fd, view):]
                if self.delay_s:
                    self.stopping.wait(self.delay_s)
        except (OSError, TimeoutError) as exc:
            self._close()
            reason = str(exc) if isinstance(exc, TimeoutError) else f"{self.device}: {exc.strerror or exc}"
            self._drop(reason)
            return
        self.sent += 1
        if self.device_fault:
            log.info("%s output works again (%s)", self.kind, self.device)
        self.device_fault = None

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if reason != self.device_fault:
            log.warning("%s output: line dropped (%s); %s", self.kind, reason, self.dropped_note)
        self.device_fault = reason

    @property
    def warning(self) -> str | None:
        """The device's problem (no host, no device): shown in status and health, not on the LEDs."""
        return f"{self.kind} output: {self.device_fault}" if self.device_fault else None

    def status(self) -> WriterStatus:
        return WriterStatus(**vars(super().status()), device=self.device, sent=self.sent, dropped=self.dropped,
                            queued=self.queue.qsize(), device_fault=self.device_fault)
