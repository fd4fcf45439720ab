"""What the patient and staff see and hear: one distinct pattern per signal.

A pattern is a list of steps (duration, which LEDs are on, buzzer tone). Kept as data so the
README table, the console backend and the tests all read the same definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

HIGH, LOW = 2000.0, 800.0  # buzzer tones (Hz); an active buzzer just sounds for tone > 0


@dataclass(frozen=True)
class Step:
    seconds: float
    green: bool = False
    red: bool = False
    amber: bool = False
    tone: float = 0.0


class Signal(str, Enum):
    READY = "ready"
    CHECKIN = "checkin"                 # recorded (only after the outbox commit returned)
    CHECKIN_WARNING = "checkin_warning"  # recorded, but expired / not yet valid: staff should look
    CHECKIN_PRIORITY = "checkin_priority"  # recorded; a priority patient (Law 15/2023/QH15): call forward
    CHECKIN_OTHER_FACILITY = "checkin_other_facility"  # recorded; registered elsewhere: staff ask for a referral
    CHIP_WAIT = "chip_wait"             # a CCCD's QR read: lay the card on the reader (nothing stored yet)
    CHECKIN_CHIP_MISMATCH = "checkin_chip_mismatch"  # recorded; the chip disagrees with the QR or failed its checks
    ALREADY_READ = "already_read"
    REJECTED = "rejected"               # invalid card or not a card (bank QR, link...)
    TRY_AGAIN = "try_again"             # a code is visible but unreadable: tilt the phone
    FAULT = "fault"                     # camera, disk or outbox full
    BROKER_DOWN = "broker_down"         # check-ins still accepted and queued
    VERDICT_ACCEPTED = "verdict_accepted"
    VERDICT_REJECTED = "verdict_rejected"


def _blinks(n: int, on: float, off: float, **leds) -> list[Step]:
    out: list[Step] = []
    for i in range(n):
        out.append(Step(on, **leds))
        if i < n - 1:
            out.append(Step(off))
    return out


PATTERNS: dict[Signal, list[Step]] = {
    Signal.READY: _blinks(2, 0.15, 0.15, green=True),
    Signal.CHECKIN: [Step(0.15, green=True, tone=HIGH), Step(1.35, green=True)],
    Signal.CHECKIN_WARNING: [Step(0.15, green=True, tone=HIGH), Step(0.6, green=True),
                             *_blinks(3, 0.15, 0.1, green=True, amber=True, red=True)],
    # the check-in's green and beep, then a short cue of its own for the staff
    Signal.CHECKIN_PRIORITY: [Step(0.15, green=True, tone=HIGH), Step(0.6, green=True),
                              *_blinks(3, 0.08, 0.08, green=True, amber=True, tone=HIGH)],
    Signal.CHECKIN_OTHER_FACILITY: [Step(0.15, green=True, tone=HIGH), Step(0.6, green=True),
                                    Step(0.7, green=True, amber=True)],
    # a slow amber pulse while the card is read: no green before the check-in is stored
    Signal.CHIP_WAIT: [Step(0.1, amber=True, tone=HIGH), *_blinks(3, 0.5, 0.5, amber=True)],
    # the check-in's green and beep, then a long amber for the staff: look at the card
    Signal.CHECKIN_CHIP_MISMATCH: [Step(0.15, green=True, tone=HIGH), Step(0.6, green=True),
                                   Step(1.5, amber=True), Step(0.1), Step(0.3, amber=True, tone=LOW)],
    Signal.ALREADY_READ: _blinks(2, 0.12, 0.12, green=True, tone=HIGH) + [Step(0.6, green=True)],
    Signal.REJECTED: [Step(0.5, red=True, tone=LOW), Step(1.0, red=True)],
    Signal.TRY_AGAIN: _blinks(3, 0.3, 0.3, amber=True, red=False),
    Signal.FAULT: _blinks(5, 0.1, 0.1, red=True, tone=LOW),
    Signal.BROKER_DOWN: [Step(0.05, amber=True, red=True)],
    Signal.VERDICT_ACCEPTED: _blinks(2, 0.4, 0.2, green=True),
    Signal.VERDICT_REJECTED: _blinks(2, 0.4, 0.2, red=True, tone=LOW),
}

DESCRIPTIONS: dict[Signal, str] = {
    Signal.READY: "station ready",
    Signal.CHECKIN: "check-in recorded",
    Signal.CHECKIN_WARNING: "check-in recorded, card expired or not yet valid",
    Signal.CHECKIN_PRIORITY: "check-in recorded, priority patient: call forward",
    Signal.CHECKIN_OTHER_FACILITY: "check-in recorded, card registered at another facility: ask for a referral",
    Signal.CHIP_WAIT: "CCCD read: lay the card on the reader",
    Signal.CHECKIN_CHIP_MISMATCH: "check-in recorded, the card's chip disagrees with the QR or failed its checks: staff look at the card",
    Signal.ALREADY_READ: "already read",
    Signal.REJECTED: "not accepted: invalid card or not a card",
    Signal.TRY_AGAIN: "code seen but unreadable: tilt the phone",
    Signal.FAULT: "station fault",
    Signal.BROKER_DOWN: "hospital system unreachable; check-ins are queued",
    Signal.VERDICT_ACCEPTED: "hospital accepted the card",
    Signal.VERDICT_REJECTED: "hospital rejected the card",
}


def duration(signal: Signal) -> float:
    return sum(step.seconds for step in PATTERNS[signal])
