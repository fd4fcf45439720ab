"""A fake clock for code that waits on a threading.Condition through a `Clock` (the feedback
player's): time moves only when the test calls advance(), so a 1.5 s pattern takes no real time and
its timing is exact rather than "about right on a loaded machine"."""

from __future__ import annotations

import threading
import time
from typing import Callable


class FakeClock:
    """now() and wait_for() as the player's Clock. advance(s) moves time forward one due deadline
    at a time, and after each lets every thread that waits on this clock run until it waits again:
    when advance() returns, the threads have done all they would have done by the new time."""

    def __init__(self, start: float = 1000.0):
        self._t = start
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()      # every thread that has waited on this clock
        # thread -> (condition, predicate, deadline or None) while it waits
        self._waits: dict[threading.Thread, tuple[threading.Condition, Callable[[], bool], float | None]] = {}

    def now(self) -> float:
        return self._t

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """As Condition.wait_for (called with `cond` held), the timeout counted on this clock."""
        me = threading.current_thread()
        deadline = None if timeout is None else self._t + timeout
        wait = (cond, predicate, deadline)
        with self._lock:
            self._threads.add(me)
            self._waits[me] = wait
        try:
            while True:
                if predicate():
                    return True
                if deadline is not None and self._t >= deadline:
                    return False
                cond.wait(1.0)   # woken by the code's own notify, or by advance() at the deadline
        finally:
            with self._lock:
                self._waits.pop(me, None)

    def advance(self, seconds: float) -> None:
        target = self._t + seconds
        while True:
            self._settle()
            with self._lock:
                due = [w for w in self._waits.values() if w[2] is not None and w[2] <= target]
            if not due:
                self._t = target
                return
            self._t = min(w[2] for w in due)
            for cond, _, deadline in due:
                if deadline <= self._t:
                    with cond:
                        cond.notify_all()

    def _settle(self, timeout: float = 10.0) -> None:
        """Return once every thread on this clock waits for something still to come."""
        end = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > end:
                raise AssertionError("a thread on the fake clock did not come back to wait")
            time.sleep(0.0005)

    def _settled(self) -> bool:
        with self._lock:
            live = [t for t in self._threads if t.is_alive()]
            if not live:
                return False          # the thread has not started waiting yet
            waits = {t: self._waits.get(t) for t in live}
        for thread, wait in waits.items():
            if wait is None:
                return False          # running between two waits
            cond, predicate, deadline = wait
            with cond:                # the waiting thread changes its entry only while holding cond
                with self._lock:
                    if self._waits.get(thread) is not wait:
                        return False
                if predicate() or (deadline is not None and deadline <= self._t):
                    return False      # about to wake up
        return True
