"""A supervised writer thread per output device, never in the scan path.

The station queues a line (bounded queue: when full, the oldest is dropped and counted); the
worker opens the device without blocking and writes with a deadline. No host reading (a USB
gadget not enumerated, a serial port nobody opened, a stalled pipe): the line is dropped after
`timeout_s` and the fault is shown; the check-in itself is in the outbox all along. A line
dropped, or typed without characters its keyboard has no key for, is also kept in the output's
record (agent.outputs.record) and shown until IT acknowledges it: the HIS lacks that check-in as
read, whatever the lines after it did.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from pathlib import Path
from typing import Callable

from agent.outputs import record
from agent.status_types import WriterStatus
from agent.worker import Worker

log = logging.getLogger(__name__)

#: Lines waiting for a device that types slower than check-ins come (a 307-character BHYT line
#: takes over 3 s at key_delay_ms = 5); beyond it the oldest is dropped and counted.
QUEUE_SIZE = 32


class DeviceWriter(Worker):
    stall_s = None   # it idles on its queue

    def __init__(self, name: str, device: str, encode: Callable[[str], list[bytes]], *, timeout_s: float = 5.0,
                 delay_s: float = 0.0, queue_size: int = QUEUE_SIZE, record_path: Path | None = None):
        super().__init__(f"output-{name}")
        self.kind, self.device, self.encode = name, device, encode
        self.timeout_s, self.delay_s = timeout_s, delay_s
        self.queue: queue.Queue[str] = queue.Queue(maxsize=queue_size)
        self.sent = self.dropped = 0
        self.device_fault: str | None = None
        #: what a dropped line was, for the log: a check-in's (safe in the outbox), or `output test`'s probe
        self.dropped_note = "the check-in is in the outbox"
        self._fd: int | None = None
        #: lines not delivered as read since IT's last acknowledgement (None: none); kept in
        #: `record_path` when there is one (`output test` keeps none)
        self.record_path = record_path
        self.lost = record.load(record_path) if record_path is not None else None
        self._lost_lock = threading.Lock()
        self._overflowed = 0      # lines the scan side dropped for a full queue, for the worker to record

    # -- the scan side: never blocks ----------------------------------------------------------

    def send(self, text: str) -> None:
        while True:
            try:
                self.queue.put_nowait(text)
                return
            except queue.Full:
                try:
                    if self.queue.get_nowait():      # an empty one only woke the worker
                        self.dropped += 1
                        with self._lost_lock:
                            self._overflowed += 1
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
            with self._lost_lock:
                overflowed, self._overflowed = self._overflowed, 0
            if overflowed:
                self._remember(lambda lost, now: lost.add_dropped("the queue was full: the host took lines too "
                                                                 "slowly", now, overflowed))

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

    def _prepare(self, text: str) -> tuple[str, str]:
        """(what to write, the characters left out of it): a keyboard leaves out what its layout
        has no key for (KeyboardWriter); the rest write the text as it is."""
        return text, ""

    def _write(self, text: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        text, left_out = self._prepare(text)
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
        if left_out and self._remember(lambda lost, now: lost.add_short(left_out, now)):
            log.warning("%s output: a line went without %s (left out: no key for it); the check-in is in the "
                        "outbox as read", self.kind, ", ".join(map(repr, left_out)))
        if self.device_fault:
            log.info("%s output works again (%s)", self.kind, self.device)
        self.device_fault = None

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        if reason != self.device_fault:
            log.warning("%s output: line dropped (%s); %s", self.kind, reason, self.dropped_note)
        self.device_fault = reason
        self._remember(lambda lost, now: lost.add_dropped(reason, now))

    def _remember(self, add: Callable[[record.Lost, float], object]) -> object:
        """Add a line to the record of what IT has not acknowledged yet, and keep it on disk;
        returns what `add` returned (None without a record: `output test`'s probe)."""
        if self.record_path is None:
            return None
        with self._lost_lock:
            self.lost = self.lost or record.Lost()
            said = add(self.lost, time.time())
            try:
                record.save(self.record_path, self.lost)
            except OSError as exc:   # a full disk: it still shows, from memory
                log.warning("%s output: cannot keep %s (%s)", self.kind, self.record_path, exc.strerror or exc)
        return said

    @property
    def unacknowledged(self) -> str | None:
        """What this output did not deliver as read since IT last acknowledged (None: nothing):
        a fault in status and health until acknowledge(), whatever the lines after it did."""
        lost = self.lost
        return lost.text(self.kind) if lost is not None else None

    def acknowledge(self) -> str | None:
        """IT has seen to it (`scanner-agent output ack`): the record is cleared; returns what it said."""
        with self._lost_lock:
            said = self.unacknowledged
            if self.record_path is not None:
                record.clear(self.record_path)
            self.lost = None
        if said:
            log.info("acknowledged: %s", said)
        return said

    @property
    def warning(self) -> str | None:
        """The device's problem (no host, no device): shown in status and health, not on the LEDs."""
        return f"{self.kind} output: {self.device_fault}" if self.device_fault else None

    def status(self) -> WriterStatus:
        return WriterStatus(**vars(super().status()), device=self.device, sent=self.sent, dropped=self.dropped,
                            queued=self.queue.qsize(), device_fault=self.device_fault)
