"""What the station does with the hospital's replies, as plain state and functions (no MQTT: the
link in agent/mqtt/link.py feeds them and acts on their answers).

- `Receipts`: with `[mqtt] delivered_on = "receipt"`, the check-ins the broker took that the
  hospital has not confirmed yet, and when to send them again.
- `verdict_refusal`: the rules a verdict must meet to be shown to whoever stands at the counter
  (the once-per-id rule is the outbox's `mark_signalled`, which survives restarts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from agent.outbox import Row

MAX_DOUBLINGS = 3   # a missing receipt doubles the wait for the next one, up to 2**3 = 8x


@dataclass
class Receipts:
    timeout_s: float
    window: int
    awaiting: dict[str, float] = field(default_factory=dict)   # event id -> when the broker took it
    early: set[str] = field(default_factory=set)               # receipts that overtook the PUBACK
    misses: int = 0                                            # timeouts in a row

    def taken(self, event_id: str, now: float) -> None:
        """The broker acknowledged the check-in: now it waits for the hospital's word."""
        if event_id in self.early:
            self.early.discard(event_id)
        else:
            self.awaiting[event_id] = now

    def confirmed(self, ids: Iterable[str], inflight: set[str]) -> list[str]:
        """The hospital stored these: the ones to mark delivered, i.e. those this station published
        and has no confirmation for yet (awaiting a receipt, or in flight: the receipt overtook the
        broker's PUBACK). Any other id is not counted: a forged receipt for a check-in not yet sent
        would otherwise keep it from ever being sent."""
        counted = []
        for event_id in dict.fromkeys(ids):
            if self.awaiting.pop(event_id, None) is not None:
                self.misses = 0
                counted.append(event_id)
            elif event_id in inflight and event_id not in self.early:
                self.early.add(event_id)
                counted.append(event_id)
        return counted

    def room(self, inflight: int) -> int:
        """How many more check-ins may be sent before receipts come back."""
        return self.window - len(self.awaiting) - inflight

    def overdue(self, now: float) -> float | None:
        """The oldest check-in's wait when it has waited past the timeout (doubled for each timeout
        in a row): everything awaiting is then forgotten, to be sent again; else None."""
        if not self.awaiting:
            return None
        waited = now - next(iter(self.awaiting.values()))
        if waited < self.timeout_s * 2 ** min(self.misses, MAX_DOUBLINGS):
            return None
        self.misses += 1
        self.clear()
        return waited

    def oldest_age(self, now: float) -> float | None:
        return None if not self.awaiting else now - min(self.awaiting.values())

    def clear(self) -> None:
        self.awaiting.clear()
        self.early.clear()


def verdict_refusal(row: Row | None, retained: bool, now: float, max_age_s: float,
                    retention_s: float) -> tuple[str, str] | None:
    """(reason, detail) when a verdict must not be shown, else None. The reasons are the
    `ignored` message's (agent/schemas/ignored.json); 'repeated' is decided by the outbox."""
    if retained:   # it would be shown again on every reconnect
        return "retained", "verdicts must be published with retain = false"
    if row is None:
        return "unknown", f"no such check-in in this station's outbox (kept {retention_s:.0f} s after delivery)"
    age = now - row.created_at
    if age > max_age_s:   # the patient has left; the next one would see it
        return "stale", f"arrived {age:.0f} s after the read (limit {max_age_s:.0f} s)"
    return None
