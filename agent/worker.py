"""One shape for every background thread of the station: supervised, stoppable, watched.

Modelled on gpiozero's GPIOThread: a `stopping` event, waits that end as soon as stop() is
called, stop() joins. On top of that, supervision: an unexpected exception in `work()` is logged
once with its traceback, shows as `fault` (status, the health topic and the LEDs read it), and
`work()` runs again after a backoff. `beat()` marks progress; the daemon pings systemd's watchdog
only while every worker is alive and has beaten recently, so a worker stuck in a call that never
returns gets the service restarted.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from agent.cards.sanitize import one_line
from agent.faults import Fault
from agent.status_types import WorkerStatus

log = logging.getLogger(__name__)

#: A crash stays visible as a fault at least this long, so the 10 s fault signal and the health
#: topic show it even when the restart works at once.
FAULT_HOLD_S = 60.0


def backoff(attempt: int, low: float, high: float, *, jitter: bool = True) -> float:
    """Delay before retry number `attempt` (0-based): doubling from `low` up to `high`; with full
    jitter (a random share of it between half and all) so stations do not retry in step."""
    delay = min(low * 2 ** min(attempt, 30), high)
    return random.uniform(delay / 2, delay) if jitter else delay


class Worker:
    """Subclasses implement `work()`: run until `self.stopping` is set (return then), call `beat()`
    as they make progress, wait with `self.wait(s)`. `finish()` runs once when the thread ends."""

    #: seconds without a beat after which the worker counts as stuck; None: never (it idles on events)
    stall_s: float | None = 120.0

    def __init__(self, name: str, *, restart_backoff: tuple[float, float] = (0.5, 30.0)):
        self.name = name
        self.stopping = threading.Event()
        self.restart_backoff = restart_backoff
        self.crashes = 0
        self.last_crash: str | None = None
        self._crashed_at = -1e9
        self._beat = time.monotonic()
        self._thread = threading.Thread(target=self._supervise, name=name, daemon=True)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Worker":
        self._beat = time.monotonic()
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self.stopping.set()
        self.wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wake(self) -> None:
        """Interrupt a wait of the worker's own (subclasses waiting on a condition override this)."""

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, beating meanwhile; True as soon as stop() was called."""
        end = time.monotonic() + seconds
        while not self.stopping.is_set():
            self.beat()
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.stopping.wait(min(left, 1.0))
        return True

    def work(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Clean up once, when the thread ends (stop() was called)."""

    # -- watching --------------------------------------------------------------------------

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def _stuck_for(self) -> float | None:
        """Seconds since the last beat, when that is longer than `stall_s`; else None."""
        silent = time.monotonic() - self._beat
        return silent if self.stall_s is not None and silent > self.stall_s else None

    @property
    def fault(self) -> str | None:
        item = self.fault_item
        return item.text if item else None

    @property
    def fault_item(self) -> Fault | None:
        """The current fault, or None: the code (worker_stopped, worker_stuck, worker_crashed) for
        monitoring, the text for people."""
        if not self.started or self.stopping.is_set():
            return None
        if not self.alive:
            return Fault("worker_stopped", f"{self.name} worker is not running")
        if (stuck := self._stuck_for()) is not None:
            return Fault("worker_stuck", f"{self.name} worker stuck for {stuck:.0f} s")
        if time.monotonic() - self._crashed_at < FAULT_HOLD_S:
            return Fault("worker_crashed", f"{self.name} worker crashed ({self.last_crash}), restarted {self.crashes}x")
        return None

    def healthy(self) -> bool:
        """Alive and making progress: what the watchdog ping depends on."""
        if not self.started or self.stopping.is_set():
            return True
        return self.alive and self._stuck_for() is None

    def status(self) -> WorkerStatus:
        return WorkerStatus(alive=self.alive, crashes=self.crashes, last_crash=self.last_crash, fault=self.fault)

    # -- supervision -----------------------------------------------------------------------

    def _supervise(self) -> None:
        attempt = 0
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    self.work()
                    attempt = 0
                    if not self.stopping.is_set():
                        self.wait(self.restart_backoff[0])  # returned early: run again
                except Exception as exc:  # noqa: BLE001 - supervision: any failure restarts the worker
                    self.crashes += 1
                    self._crashed_at = time.monotonic()
                    if self._crashed_at - began > FAULT_HOLD_S:
                        attempt = 0  # it had been running well: back off from the start
                    message = one_line(f"{type(exc).__name__}: {exc}", 240)
                    if message != self.last_crash:
                        log.exception("%s worker crashed; restarting", self.name)
                    else:
                        log.error("%s worker crashed again (%s); restarting", self.name, message)
                    self.last_crash = message
                    self.wait(backoff(attempt, *self.restart_backoff))
                    attempt += 1
        finally:
            try:
                self.finish()
            except Exception:  # noqa: BLE001
                log.exception("%s worker: cleanup failed", self.name)
