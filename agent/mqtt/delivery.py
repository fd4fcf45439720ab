"""When a check-in counts as delivered, and what to send next: the link's rules, without MQTT.

The link (agent/mqtt/link.py) owns the connection and forwards to a `Delivery` what the broker
and the hospital say; `Delivery` answers with rows to publish and marks rows delivered in the
outbox. In: pending rows, PUBACK results, receipts and verdicts. Out: rows to publish, ids marked
delivered, and why a reply was not acted on. Its timers read an injectable monotonic clock, so
tests/test_delivery.py drives every rule with a fake outbox and no broker.

One delivery rule, chosen once from `[mqtt] delivered_on`:
- `OnPuback` ("broker"): delivered when the broker acknowledged it (PUBACK with a success reason);
- `OnReceipt` ("receipt"): delivered only when the hospital's consumer confirmed it (a receipt,
  or a verdict): then no broker queue limit or consumer session can lose a check-in.

The reply rules: a receipt counts only check-ins this station published and awaits; a verdict is
shown once per check-in (the outbox's `mark_signalled`, which survives restarts), never when
retained, unknown or stale (the patient has left).

A check-in the broker will not take is set aside as undeliverable (the outbox's `set_aside`: kept,
counted, no longer sent), so it never holds up the ones behind it: one larger than the station
publishes or than the broker's Maximum Packet Size (CONNACK), before it is sent; one the broker
refuses as too large or malformed (its PUBACK); one that twice in a row was the oldest unacknowledged
when the broker closed the connection for a packet too large (Mosquitto's `max_packet_size`) or
with a PUBACK paho cannot read (Mosquitto 2.0's answer to a message over `message_size_limit`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from agent.config import MqttConfig
from agent.event import MAX_CHECKIN_BYTES, encode
from agent.mqtt.messages import Verdict
from agent.outbox import Row
from agent.worker import backoff

log = logging.getLogger(__name__)

RESCAN_EVERY_S = 5.0   # look for rows put back in the queue (`queue retry`) this often
MAX_DOUBLINGS = 3      # a missing receipt doubles the wait for the next one, up to 2**3 = 8x
NOBODY = "no hospital consumer is subscribed to the check-in topic"
#: PUBACK reasons about the message itself, not the topic or the station: that row is set aside
ROW_REFUSALS = ("Packet too large", "Payload format invalid")
#: why a connection closed when the broker would not take the packet in flight: its DISCONNECT
#: (max_packet_size), or paho's own on Mosquitto 2.0's PUBACK 0x95 (message_size_limit), a reason
#: code PUBACK may not carry
SIZE_CLOSES = ("Packet too large", "Protocol error")
CLOSES_TO_SET_ASIDE = 2   # in a row with the same row oldest unacknowledged: it is that row


class Queue(Protocol):
    """What delivery needs of the outbox (agent/outbox/store.py's Outbox has it all)."""
    retention_s: float

    def pending(self, limit: int = ..., after_seq: int = ...) -> list[Row]: ...
    def pending_keys(self, limit: int) -> list[tuple[str, int]]: ...
    def get(self, event_id: str) -> Row | None: ...
    def mark_delivered(self, ids: list[str]) -> int: ...
    def mark_signalled(self, event_id: str) -> bool: ...
    def count_attempt(self, ids: list[str]) -> None: ...
    def count_refused(self) -> None: ...
    def set_aside(self, event_id: str, reason: str) -> bool: ...


# -- the two delivery rules ---------------------------------------------------------------------

class OnPuback:
    """delivered_on = "broker": the broker's PUBACK is the end of the station's part."""
    name = "broker"
    replies = ("verdict",)   # the topics to subscribe to

    def __init__(self) -> None:
        self.awaiting: dict[str, float] = {}   # never anything: nothing waits past the PUBACK

    def taken(self, event_id: str, now: float) -> list[str]:
        """The broker acknowledged it: the ids delivered now."""
        return [event_id]

    def confirmed(self, ids: Iterable[str], inflight: set[str]) -> list[str]:
        return []   # delivered already on the PUBACK: a receipt or verdict adds nothing

    def room(self, inflight: int) -> int:
        return 1 << 30

    def overdue(self, now: float) -> float | None:
        return None

    def oldest_age(self, now: float) -> float | None:
        return None

    def clear(self) -> None:
        pass


@dataclass
class OnReceipt:
    """delivered_on = "receipt": the check-ins the broker took that the hospital has not confirmed
    yet, and when to send them again."""
    timeout_s: float
    window: int
    awaiting: dict[str, float] = field(default_factory=dict)   # event id -> when the broker took it
    early: set[str] = field(default_factory=set)               # receipts that overtook the PUBACK
    misses: int = 0                                            # timeouts in a row
    name = "receipt"
    replies = ("verdict", "receipt")

    def taken(self, event_id: str, now: float) -> list[str]:
        """The broker acknowledged the check-in: now it waits for the hospital's word (none
        delivered now, unless its receipt came first and counted it already)."""
        if event_id in self.early:
            self.early.discard(event_id)
        else:
            self.awaiting[event_id] = now
        return []

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


Rule = OnPuback | OnReceipt


def rule_for(cfg: MqttConfig) -> Rule:
    """The one delivery rule `[mqtt] delivered_on` names (config has checked the name)."""
    return OnReceipt(cfg.receipt_timeout_s, cfg.receipt_window) if cfg.delivered_on == "receipt" else OnPuback()


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


# -- the send window ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setback:
    """A PUBACK that did not deliver: sending starts again from the oldest undelivered row after
    `pause_s`. `refused`: the broker's reason code text (an ACL, say); None: nobody subscribed."""
    pause_s: float
    refused: str | None = None


@dataclass(frozen=True)
class Progress:
    """The delivery part of health and status (named as messages.health_payload's arguments)."""
    delivered_on: str
    awaiting: int = 0
    oldest_awaiting_s: float | None = None

    def status_fields(self) -> dict[str, object]:
        """The same, as the `mqtt` section of `status` names it (agent.status_types.MqttStatus)."""
        return {"delivered_on": self.delivered_on, "awaiting_receipt": self.awaiting}


class Delivery:
    """The send cursor, the in-flight window, acks, pause and refusal back-off, the requeue rescan
    and receipt timeouts, for one outbox. Not thread-safe: the link calls it from its own thread.
    `clock`: monotonic seconds for the timers; `wall`: epoch seconds, to age a row for a verdict."""

    def __init__(self, outbox: Queue, rule: Rule, *, window: int = 32, backoff_s: tuple[float, float] = (1.0, 120.0),
                 require_subscriber: bool = True, verdict_max_age_s: float = 120.0,
                 rescan_every_s: float = RESCAN_EVERY_S, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.outbox, self.rule = outbox, rule
        self.window = window
        self.backoff_min, self.backoff_max = backoff_s
        self.require_subscriber = require_subscriber
        self.verdict_max_age_s = verdict_max_age_s
        self.rescan_every_s = rescan_every_s
        self.clock, self.wall = clock, wall
        self.inflight: dict[int, str] = {}   # message id -> event id
        self.acked: list[str] = []           # delivered, to be marked in the outbox (one write a batch)
        self.sent_upto = -1                  # the send cursor: the last seq published this session
        self.paused_until = 0.0
        self.refusals = 0                    # refused publishes in a row
        self.next_rescan = 0.0
        self.max_payload = MAX_CHECKIN_BYTES  # the largest check-in this broker takes (CONNACK)
        self.suspect: tuple[str, int] | None = None   # (event id, closes): oldest unacked at size closes

    @classmethod
    def for_config(cls, cfg: MqttConfig, outbox: Queue, **kw) -> "Delivery":
        """The delivery `[mqtt]` describes: its rule, back-off of `kw`, subscriber and verdict limits."""
        return cls(outbox, rule_for(cfg), require_subscriber=cfg.require_subscriber,
                   verdict_max_age_s=cfg.verdict_max_age_s, **kw)

    # -- connection events --

    def connected(self, max_payload: int | None = None) -> None:
        """A new session: send from the oldest undelivered row, at once. `max_payload`: the largest
        check-in the broker's Maximum Packet Size (CONNACK) leaves room for; None when it sets none."""
        self.sent_upto, self.paused_until = -1, 0.0
        self.max_payload = MAX_CHECKIN_BYTES if max_payload is None else min(MAX_CHECKIN_BYTES, max_payload)

    def went_down(self, closed: str | None = None) -> int:
        """The connection ended (`closed`: why, the DISCONNECT reason): marks what was acknowledged
        (the count); unacknowledged rows and rows without a receipt stay in the outbox and are sent
        again, except a row the broker keeps closing the connection on (SIZE_CLOSES), set aside."""
        delivered = self.flush()
        if closed in SIZE_CLOSES and self.inflight:
            self._closed_on(next(iter(self.inflight.values())), closed)
        self.inflight.clear()
        self.rule.clear()
        return delivered

    def _closed_on(self, event_id: str, closed: str) -> None:
        """The broker closed the connection (`closed`) with `event_id` the oldest check-in it had not
        acknowledged: the packets before it were taken, so it is that one when this repeats."""
        closes = self.suspect[1] + 1 if self.suspect and self.suspect[0] == event_id else 1
        self.suspect = (event_id, closes)
        if closes >= CLOSES_TO_SET_ASIDE:
            self.suspect = None
            self._set_aside(event_id, f"the broker closed the connection each time it was sent ({closes} times "
                                      f"in a row: {closed}): larger than it takes (Mosquitto's message_size_limit "
                                      f"or max_packet_size?), or refused")

    def drop(self) -> None:
        """The link's thread crashed: forget everything, mark nothing (an outbox error may be why);
        all of it is sent again and the hospital deduplicates by id."""
        self.acked.clear()
        self.inflight.clear()
        self.rule.clear()

    # -- sending --

    def due(self) -> list[Row]:
        """The rows to publish now, oldest first (none while paused or the window is full). Also
        runs the timers: receipts overdue and the requeue rescan move the cursor back."""
        now = self.clock()
        if now >= self.next_rescan:
            self.next_rescan = now + self.rescan_every_s
            self._rescan_if_requeued()
        waiting = len(self.rule.awaiting)
        if (waited := self.rule.overdue(now)) is not None:
            log.warning("MQTT: %d check-in(s) without a receipt from the hospital for %.0f s; sending again",
                        waiting, waited)
            self.sent_upto = -1
        if now < self.paused_until:
            return []
        room = min(self.window - len(self.inflight), self.rule.room(len(self.inflight)))
        if room <= 0:
            return []
        return self.outbox.pending(limit=room, after_seq=self.sent_upto)

    def send(self, publish: Callable[[Row], int | None]) -> list[str]:
        """Publishes the rows due, oldest first, with `publish` (the message id, None when the
        client would not take it: the rest wait for the next turn). The ids sent."""
        sent = []
        for row in self.due():
            size = len(encode(row.payload))
            if size > self.max_payload:   # it can never go: set aside, so it holds up none behind it
                limit = ("a check-in may be" if self.max_payload == MAX_CHECKIN_BYTES
                         else "the broker's Maximum Packet Size leaves room for")
                self._set_aside(row.id, f"{size} bytes, larger than {limit} ({self.max_payload} bytes)", row.seq)
                self.sent_upto = row.seq
                continue
            mid = publish(row)
            if mid is None:
                break
            self.inflight[mid] = row.id
            self.sent_upto = row.seq
            sent.append(row.id)
        self.outbox.count_attempt(sent)  # one write per batch: IT sees how often each was tried
        return sent

    def _rescan_if_requeued(self) -> None:
        """`queue retry` puts a delivered row back behind the send cursor: start again from the
        oldest undelivered row when one is there that is neither in flight nor awaiting a receipt."""
        busy = set(self.inflight.values()) | self.rule.awaiting.keys()
        for event_id, seq in self.outbox.pending_keys(limit=len(busy) + 1):
            if seq > self.sent_upto:
                return
            if event_id not in busy:
                log.info("MQTT: check-in #%d is queued again; sending from the oldest undelivered", seq)
                self.sent_upto = -1
                return

    # -- what the broker and the hospital say --

    def puback(self, mid: int, refused: str | None = None, nobody: bool = False) -> Setback | None:
        """The broker's PUBACK for message `mid`: `refused`, its failure reason; `nobody`, MQTT 5's
        "no matching subscribers". A Setback when the check-in was not delivered."""
        event_id = self.inflight.pop(mid, None)
        if event_id is None:
            return None   # status / health, or a resend of an earlier session's message
        if nobody and self.require_subscriber:
            # the broker dropped it, no consumer was listening (a consumer restarting, or a broker
            # restarted before the consumers subscribed again)
            return self._resend_after(Setback(min(max(self.backoff_min, 1.0), self.backoff_max)))
        if refused in ROW_REFUSALS:   # this message, not the topic: the rows behind it go on
            self.outbox.count_refused()
            self._set_aside(event_id, f"the broker refused it: {refused}")
            return None
        if refused is not None:
            self.outbox.count_refused()
            self.refusals += 1
            pause = backoff(self.refusals, self.backoff_min, self.backoff_max, jitter=False)
            return self._resend_after(Setback(pause, refused))
        self.refusals = 0
        if self.suspect and self.suspect[0] == event_id:
            self.suspect = None
        self.acked += self.rule.taken(event_id, self.clock())
        return None

    def _set_aside(self, event_id: str, reason: str, seq: int | None = None) -> None:
        """The broker will not take this check-in: set aside in the outbox (kept, counted, no longer
        sent) and said once in the log, with what IT does about it (no personal data)."""
        if self.outbox.set_aside(event_id, reason):
            log.error("MQTT: check-in %s%s set aside as undeliverable: %s. It stays in the outbox and is no "
                      "longer sent; the ones behind it go on. See 'scanner-agent queue list', then 'queue "
                      "remove ID --export FILE' (or 'queue retry ID' once the broker takes it)",
                      f"#{seq} " if seq is not None else "", event_id, reason)

    def _resend_after(self, setback: Setback) -> Setback:
        """Not delivered: send again from the oldest undelivered row, after the pause."""
        self.paused_until = self.clock() + setback.pause_s
        self.sent_upto = -1
        return setback

    def flush(self) -> int:
        """Marks the acknowledged rows delivered, in one write: how many were newly marked."""
        if not self.acked:
            return 0
        ids, self.acked = self.acked, []
        return self.outbox.mark_delivered(ids)

    def receipt(self, ids: list[str], quiet: bool = False) -> tuple[int, list[str]]:
        """The consumer stored these check-ins (or already had them): those this station
        published and awaits a receipt for are marked delivered (the count). Also the ids not
        acted on, to report (none when `quiet`): a repeated receipt of a delivered one is normal."""
        counted = self.rule.confirmed(ids, set(self.inflight.values()))
        delivered = self.outbox.mark_delivered(counted) if counted else 0
        if quiet:
            return delivered, []
        unknown = []
        for event_id in dict.fromkeys(ids):
            if event_id in counted:
                continue
            row = self.outbox.get(event_id)
            if row is None or row.delivered_at is None:
                unknown.append(event_id)
        return delivered, unknown

    def verdict(self, verdict: Verdict, retained: bool) -> tuple[int, tuple[str, str] | None]:
        """Whether to show a verdict: (rows it marked delivered, (reason, detail) when not shown).
        Shown once per check-in, only while the patient may still be at the counter; in receipt
        mode it also proves the hospital has the check-in."""
        row = self.outbox.get(verdict.id)
        delivered = self.receipt([verdict.id], quiet=True)[0] if row is not None else 0
        refusal = verdict_refusal(row, retained, self.wall(), self.verdict_max_age_s, self.outbox.retention_s)
        if refusal is None and not self.outbox.mark_signalled(verdict.id):
            refusal = ("repeated", "a verdict for this check-in was already shown")
        return delivered, refusal

    def progress(self) -> Progress:
        return Progress(self.rule.name, len(self.rule.awaiting), self.rule.oldest_age(self.clock()))
