"""The station's periodic tasks (status file, purge, fault signal, watchdog...) in one place,
run from the main loop between frames. The clock is injectable, so tests need not sleep."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass
class Task:
    name: str
    every_s: float
    fn: Callable[[], None]
    next_at: float
    last_error: str | None = None


class Scheduler:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.tasks: list[Task] = []

    def every(self, seconds: float, fn: Callable[[], None], *, first_in: float = 0.0, name: str = "") -> Task:
        task = Task(name or getattr(fn, "__name__", "task"), seconds, fn, self.clock() + first_in)
        self.tasks.append(task)
        return task

    def run_due(self) -> int:
        """Run every task that is due; returns how many ran. A task that raises is logged (once per
        distinct error) and runs again at its next time: one failing chore never stops the loop."""
        now, ran = self.clock(), 0
        for task in self.tasks:
            if now < task.next_at:
                continue
            task.next_at = now + task.every_s
            ran += 1
            try:
                task.fn()
                task.last_error = None
            except Exception as exc:  # noqa: BLE001 - the main loop must go on
                message = f"{type(exc).__name__}: {exc}"
                if message != task.last_error:
                    log.exception("periodic task %s failed", task.name)
                task.last_error = message
        return ran
