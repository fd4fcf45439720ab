"""Play signal patterns on LEDs and a buzzer from a background thread, never blocking the scan loop.

A newer signal interrupts the pattern being played: the latest event is what the patient is
looking at.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

from agent.config import FeedbackConfig
from agent.feedback.patterns import DESCRIPTIONS, PATTERNS, Signal, Step
from agent.worker import Worker

log = logging.getLogger(__name__)


class Output(Protocol):
    def show(self, step: Step) -> None: ...
    def announce(self, signal: Signal, detail: str) -> None: ...
    def close(self) -> None: ...


class NoOutput:
    def show(self, step: Step) -> None:
        pass

    def announce(self, signal: Signal, detail: str) -> None:
        pass

    def close(self) -> None:
        pass


class ConsoleOutput(NoOutput):
    """The demo's 'LEDs': one line per signal on standard output."""

    SYMBOL = {Signal.CHECKIN: "[GREEN + beep]", Signal.CHECKIN_WARNING: "[GREEN + AMBER]",
              Signal.CHECKIN_PRIORITY: "[GREEN + amber x3]", Signal.CHECKIN_OTHER_FACILITY: "[GREEN, AMBER]",
              Signal.REJECTED: "[RED + buzz]", Signal.ALREADY_READ: "[green x2]",
              Signal.TRY_AGAIN: "[amber blink]", Signal.FAULT: "[RED blink]", Signal.READY: "[green x2]",
              Signal.BROKER_DOWN: "[amber flash]", Signal.VERDICT_ACCEPTED: "[green long x2]",
              Signal.VERDICT_REJECTED: "[red long x2]"}

    def announce(self, signal: Signal, detail: str) -> None:
        text = f"{self.SYMBOL[signal]:16s} {DESCRIPTIONS[signal]}"
        print(f"{text}  {detail}" if detail else text, flush=True)


class GpioOutput:
    """LEDs and a buzzer through gpiozero (whatever pin factory is active: lgpio on the Pi,
    MockFactory in tests)."""

    def __init__(self, cfg: FeedbackConfig):
        from gpiozero import LED, Buzzer, TonalBuzzer

        self.green, self.red = LED(cfg.green_pin), LED(cfg.red_pin)
        self.amber = LED(cfg.amber_pin) if cfg.amber_pin >= 0 else None
        self.buzzer = None
        self.tonal = cfg.buzzer == "tonal"
        if cfg.buzzer_pin >= 0:
            self.buzzer = TonalBuzzer(cfg.buzzer_pin) if self.tonal else Buzzer(cfg.buzzer_pin)

    def show(self, step: Step) -> None:
        self.green.value = step.green
        # without an amber LED, amber is shown on the red one
        self.red.value = step.red or (step.amber and self.amber is None)
        if self.amber is not None:
            self.amber.value = step.amber
        if self.buzzer is not None:
            if not step.tone:
                self.buzzer.stop() if self.tonal else self.buzzer.off()
            elif self.tonal:
                from gpiozero.tones import Tone
                self.buzzer.play(Tone.from_frequency(min(step.tone, self.buzzer.max_tone.frequency)))
            else:
                self.buzzer.on()

    def announce(self, signal: Signal, detail: str) -> None:
        pass

    def close(self) -> None:
        for dev in (self.green, self.red, self.amber, self.buzzer):
            if dev is not None:
                dev.close()


class Clock(Protocol):
    """The player's time: when it is, and a wait on its condition that ends when `predicate` holds
    or `timeout` seconds (None: no limit) have passed. Injectable so that tests play patterns on a
    fake clock instead of sleeping through them."""

    def now(self) -> float: ...
    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None) -> bool: ...


class MonotonicClock:
    """Real time: time.monotonic and the condition's own wait."""

    def now(self) -> float:
        return time.monotonic()

    def wait_for(self, cond: threading.Condition, predicate: Callable[[], bool], timeout: float | None) -> bool:
        return cond.wait_for(predicate, timeout)


def make_output(cfg: FeedbackConfig) -> Output:
    if cfg.backend == "gpio":
        return GpioOutput(cfg)
    if cfg.backend == "console":
        return ConsoleOutput()
    return NoOutput()


class Feedback(Worker):
    """Owns the output and the supervised thread that plays patterns (a failing LED or buzzer is a
    fault and a restart, never a stopped station)."""

    stall_s = None  # it idles on a condition between signals

    def __init__(self, output: Output, *, clock: Clock | None = None):
        super().__init__("feedback")
        self.output = output
        self.clock = clock or MonotonicClock()
        self.history: list[tuple[float, Signal]] = []   # (clock time, signal), for tests and status
        self._pending: tuple[Signal, str] | None = None
        self._cond = threading.Condition()
        self.start()

    def signal(self, signal: Signal, detail: str = "") -> None:
        """Show `signal` now (interrupting what is playing); returns at once."""
        with self._cond:
            self._pending = (signal, detail)
            self.history.append((self.clock.now(), signal))
            del self.history[:-1000]
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout: float = 2.0) -> None:
        self.stop(timeout)
        try:
            self.output.show(Step(0))  # everything off
        finally:
            self.output.close()

    def work(self) -> None:
        while True:
            with self._cond:
                self.clock.wait_for(self._cond, lambda: self._pending is not None or self.stopping.is_set(), None)
                if self.stopping.is_set():
                    return
                signal, detail = self._pending
                self._pending = None
            self.output.announce(signal, detail)
            self._play(PATTERNS[signal])

    def _play(self, steps: list[Step]) -> None:
        for step in steps:
            self.output.show(step)
            with self._cond:
                if self.clock.wait_for(self._cond, lambda: self._pending is not None or self.stopping.is_set(),
                                       step.seconds):
                    return  # interrupted by a newer signal
        self.output.show(Step(0))
