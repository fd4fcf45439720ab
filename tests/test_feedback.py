"""LED and buzzer patterns on gpiozero's MockFactory: pin states and their timing, on a fake clock
(tests/support/clock.py) that both the player and the mock pins read: exact and with no sleeping."""

import io
import time
from contextlib import redirect_stdout

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import FeedbackConfig
from agent.feedback import PATTERNS, ConsoleOutput, Feedback, GpioOutput, Signal, duration
from support.clock import FakeClock
from support.wait import wait_for


@pytest.fixture
def clock(monkeypatch):
    """The fake clock, also the one by which gpiozero's mock pins time their state changes."""
    fake = FakeClock()
    monkeypatch.setattr("gpiozero.pins.mock.monotonic", fake.now)
    return fake


@pytest.fixture
def pins(clock):
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


def on_periods(pin):
    """[(start, end)] seconds since the first recorded state during which the pin was high.

    gpiozero's MockPin records each state with the time since the previous change.
    """
    out, start, t = [], None, 0.0
    for st in pin.states:
        t += st.timestamp
        if st.state and start is None:
            start = t
        elif not st.state and start is not None:
            out.append((start, t))
            start = None
    return out


def test_every_signal_has_a_distinct_pattern():
    shapes = {tuple(PATTERNS[s]) for s in Signal}
    assert len(shapes) == len(Signal)


def test_checkin_green_and_beep_timing(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio", green_pin=17, red_pin=27, buzzer_pin=22)), clock=clock)
    green, red, buzz = pins.pin(17), pins.pin(27), pins.pin(22)
    for p in (green, red, buzz):
        p.clear_states()
    t0 = time.monotonic()
    fb.signal(Signal.CHECKIN)
    assert time.monotonic() - t0 < 0.05  # returns at once: never blocks the scan loop
    clock.advance(duration(Signal.CHECKIN) + 0.3)
    g = on_periods(green)
    b = on_periods(buzz)
    assert len(g) == 1 and g[0][1] - g[0][0] == pytest.approx(1.5, abs=0.12)
    assert len(b) == 1 and b[0][1] - b[0][0] == pytest.approx(0.15, abs=0.06)
    assert on_periods(red) == []
    fb.close()


def test_rejected_is_red_with_low_buzz_and_no_green(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio")), clock=clock)
    fb.signal(Signal.REJECTED)
    clock.advance(duration(Signal.REJECTED) + 0.2)
    red = on_periods(pins.pin(27))
    assert len(red) == 1 and red[0][1] - red[0][0] == pytest.approx(1.5, abs=0.12)
    assert on_periods(pins.pin(17)) == []
    fb.close()


def test_already_read_blinks_twice(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio")), clock=clock)
    fb.signal(Signal.ALREADY_READ)
    clock.advance(duration(Signal.ALREADY_READ) + 0.2)
    blinks = on_periods(pins.pin(17))  # a short blink, then one that stays on a little longer
    assert len(blinks) == 2
    assert blinks[0][1] - blinks[0][0] == pytest.approx(0.12, abs=0.06)
    assert blinks[1][1] - blinks[1][0] == pytest.approx(0.72, abs=0.1)
    fb.close()


def test_amber_shown_on_red_without_amber_led_and_on_amber_with_one(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio", amber_pin=-1)), clock=clock)
    fb.signal(Signal.TRY_AGAIN)
    clock.advance(duration(Signal.TRY_AGAIN) + 0.2)
    assert len(on_periods(pins.pin(27))) == 3
    fb.close()
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio", amber_pin=23)), clock=clock)
    fb.signal(Signal.TRY_AGAIN)
    clock.advance(duration(Signal.TRY_AGAIN) + 0.2)
    assert len(on_periods(pins.pin(23))) == 3
    fb.close()


def test_newer_signal_interrupts(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio")), clock=clock)
    fb.signal(Signal.CHECKIN)
    clock.advance(0.3)
    fb.signal(Signal.REJECTED)
    clock.advance(duration(Signal.REJECTED) + 0.3)
    green = on_periods(pins.pin(17))
    assert len(green) == 1 and green[0][1] - green[0][0] < 0.5  # cut short
    assert [s for _, s in fb.history] == [Signal.CHECKIN, Signal.REJECTED]
    fb.close()


def test_tonal_buzzer_plays_tones(pins, clock):
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio", buzzer="tonal")), clock=clock)
    fb.signal(Signal.REJECTED)
    clock.advance(0.2)
    pin = pins.pin(22)
    assert pin.frequency and 700 < pin.frequency < 900   # the low tone
    clock.advance(duration(Signal.REJECTED))
    assert not pin.frequency                              # silent afterwards
    fb.close()


def test_close_turns_everything_off(pins):   # (on the real clock, as the two below: the default)
    fb = Feedback(GpioOutput(FeedbackConfig(backend="gpio", amber_pin=23)))
    fb.signal(Signal.CHECKIN)
    time.sleep(0.05)
    fb.close()
    assert not pins.pin(17).state and not pins.pin(27).state and not pins.pin(22).state


def test_console_backend_prints_one_line_per_signal():
    out = io.StringIO()
    with redirect_stdout(out):
        fb = Feedback(ConsoleOutput())
        fb.signal(Signal.CHECKIN, "BHYT Ng*** V** A* (ok)")
        assert wait_for(out.getvalue, 10)
        fb.close()
    assert out.getvalue().strip() == "[GREEN + beep]   check-in recorded  BHYT Ng*** V** A* (ok)"
