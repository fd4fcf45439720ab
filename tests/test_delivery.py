"""The delivery rules on their own (agent/mqtt/delivery.py): the send window, the no-subscriber
resend, refusal back-off, the requeue rescan, receipts (overdue, forged, early) and the verdict
rules, driven with an in-memory outbox and a fake clock, no broker. tests/test_mqtt.py and
tests/test_mqtt_replies.py run the link with these rules against a real Mosquitto."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from agent.config import MqttConfig
from agent.mqtt.delivery import (NOBODY, Delivery, OnPuback, OnReceipt, Setback, rule_for,
                                 verdict_refusal)
from agent.mqtt.messages import Verdict
from agent.outbox import Row
from agent.worker import backoff


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class MemoryOutbox:
    """The outbox's queue as delivery uses it, in a dict (the real one is tests/test_outbox.py's)."""

    retention_s = 3600.0

    def __init__(self, n: int = 0, created_at: float = 1000.0):
        self.rows: dict[str, Row] = {}
        self.signalled: set[str] = set()
        self.refused = 0
        for _ in range(n):
            self.put(created_at)

    def put(self, created_at: float = 1000.0) -> Row:
        seq = len(self.rows) + 1
        row = Row(f"00000000-0000-7000-8000-{seq:012d}", seq, created_at, {"seq": seq}, None, 0)
        self.rows[row.id] = row
        return row

    def _undelivered(self) -> list[Row]:
        return sorted((r for r in self.rows.values() if r.delivered_at is None and r.undeliverable_at is None),
                      key=lambda r: r.seq)

    def set_aside(self, event_id: str, reason: str) -> bool:
        row = self.rows[event_id]
        if row.delivered_at is not None or row.undeliverable_at is not None:
            return False
        self.rows[event_id] = dataclasses.replace(row, undeliverable_at=1.0, undeliverable_reason=reason)
        return True

    def pending(self, limit: int = 100, after_seq: int = -1) -> list[Row]:
        return [r for r in self._undelivered() if r.seq > after_seq][:limit]

    def pending_keys(self, limit: int) -> list[tuple[str, int]]:
        return [(r.id, r.seq) for r in self._undelivered()][:limit]

    def get(self, event_id: str) -> Row | None:
        return self.rows.get(event_id)

    def mark_delivered(self, ids: list[str]) -> int:
        n = 0
        for i in ids:
            if i in self.rows and self.rows[i].delivered_at is None:
                self.rows[i] = dataclasses.replace(self.rows[i], delivered_at=1.0)
                n += 1
        return n

    def requeue(self, event_id: str) -> None:
        self.rows[event_id] = dataclasses.replace(self.rows[event_id], delivered_at=None)

    def mark_signalled(self, event_id: str) -> bool:
        if event_id in self.signalled:
            return False
        self.signalled.add(event_id)
        return True

    def count_attempt(self, ids: list[str]) -> None:
        for i in ids:
            self.rows[i] = dataclasses.replace(self.rows[i], attempts=self.rows[i].attempts + 1)

    def count_refused(self) -> None:
        self.refused += 1

    def depth(self) -> int:
        return len(self._undelivered())


class Broker:
    """Stands for the client: hands out message ids, remembers what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[int, Row]] = []
        self.full = False

    def __call__(self, row: Row) -> int | None:
        if self.full:
            return None
        mid = len(self.published) + 1
        self.published.append((mid, row))
        return mid

    def seqs(self) -> list[int]:
        return [row.seq for _, row in self.published]

    def mid(self, seq: int) -> int:
        """The newest message id under which the row `seq` went out."""
        return [m for m, row in self.published if row.seq == seq][-1]


def make(n: int = 5, *, rule=None, **kw) -> tuple[Delivery, MemoryOutbox, Broker, FakeClock]:
    box, clock = MemoryOutbox(n), FakeClock()
    kw.setdefault("backoff_s", (0.05, 0.5))
    return Delivery(box, rule or OnPuback(), clock=clock, wall=clock, **kw), box, Broker(), clock


def test_the_window_bounds_what_is_in_flight_and_acks_open_it_in_order():
    d, box, broker, _ = make(5, window=3)
    assert d.send(broker) == [r.id for r in box.pending(3)]
    assert broker.seqs() == [1, 2, 3]
    assert d.send(broker) == [] and broker.seqs() == [1, 2, 3]     # the window is full
    assert d.puback(broker.mid(1)) is None
    assert box.depth() == 5, "marked in one write per turn, not on each PUBACK"
    assert d.flush() == 1 and box.depth() == 4
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 4]                           # one more, the next in sequence
    assert all(box.get(r.id).attempts == 1 for _, r in broker.published)
    for seq in (2, 3, 4):
        d.puback(broker.mid(seq))
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 4, 5]
    d.puback(broker.mid(5))
    assert d.flush() == 4 and box.depth() == 0
    assert d.puback(999) is None                                   # status / health: not ours


def test_a_client_that_takes_no_more_stops_the_batch_and_it_is_sent_next_turn():
    d, box, broker, _ = make(3)
    broker.full = True
    assert d.send(broker) == [] and d.inflight == {}
    broker.full = False
    assert len(d.send(broker)) == 3 and broker.seqs() == [1, 2, 3]


def test_no_subscriber_sends_again_from_the_oldest_after_a_pause():
    d, box, broker, clock = make(3, backoff_s=(0.05, 0.5))
    d.send(broker)
    setback = d.puback(broker.mid(1), nobody=True)
    assert setback == Setback(0.5, None)            # at least a second, capped by the maximum
    assert NOBODY.startswith("no hospital consumer")
    d.puback(broker.mid(2))
    d.puback(broker.mid(3))
    d.flush()
    assert box.depth() == 1                         # only the one nobody received stays queued
    assert d.send(broker) == []                     # paused
    clock.t += 0.5
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 1]            # the same row, the same id, again
    assert d.puback(broker.mid(1)) is None and d.flush() == 1 and box.depth() == 0


def test_no_subscriber_counts_as_delivered_when_the_config_does_not_require_one():
    d, box, broker, _ = make(1, require_subscriber=False)
    d.send(broker)
    assert d.puback(broker.mid(1), nobody=True) is None
    assert d.flush() == 1


def test_refusals_back_off_doubling_to_the_maximum_and_a_success_resets_it():
    d, box, broker, clock = make(1, backoff_s=(0.1, 1.0))
    pauses = []
    for _ in range(6):
        clock.t += 10
        d.send(broker)
        setback = d.puback(broker.mid(1), refused="Not authorized")
        assert setback.refused == "Not authorized"
        pauses.append(setback.pause_s)
        assert d.send(broker) == []                             # nothing while paused
    assert pauses == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert pauses == [backoff(n, 0.1, 1.0, jitter=False) for n in range(1, 7)]
    assert box.refused == 6 and box.depth() == 1               # counted, never marked delivered
    clock.t += 1.0
    d.send(broker)
    assert d.puback(broker.mid(1)) is None and d.refusals == 0
    box.put()
    d.send(broker)
    assert d.puback(broker.mid(2), refused="Quota exceeded").pause_s == 0.2   # from the start again


def test_a_row_queued_again_behind_the_cursor_is_found_by_the_rescan():
    d, box, broker, clock = make(3, rescan_every_s=5.0)
    d.send(broker)
    for seq in (1, 2, 3):
        d.puback(broker.mid(seq))
    d.flush()
    assert box.depth() == 0
    box.requeue(broker.published[0][1].id)          # `scanner-agent queue retry` on the first
    clock.t += 1
    assert d.send(broker) == []                     # behind the cursor: not seen before the rescan
    clock.t += 4
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 1]
    box.put()                                       # a new row is after the cursor: no rescan needed
    clock.t += 0.1
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 1, 4]


def test_a_running_station_rescans_every_5_s_by_default():
    """`queue retry` on a running station is sent again within seconds (tests/test_mqtt_replies.py
    runs it through a broker with a shorter interval)."""
    d, box, broker, clock = make(1)
    d.send(broker)
    d.puback(broker.mid(1))
    d.flush()
    box.requeue(broker.published[0][1].id)
    clock.t += 4.9
    assert d.send(broker) == []
    clock.t += 0.1
    assert len(d.send(broker)) == 1


def test_the_rescan_leaves_rows_in_flight_alone():
    d, box, broker, clock = make(2, rescan_every_s=5.0)
    d.send(broker)
    clock.t += 5
    assert d.send(broker) == [] and broker.seqs() == [1, 2]   # in flight: not a reason to resend


def test_receipt_mode_delivers_on_the_receipt_and_resends_what_is_overdue(caplog):
    rule = OnReceipt(timeout_s=10, window=2)
    d, box, broker, clock = make(3, rule=rule, window=32)
    d.send(broker)
    assert broker.seqs() == [1, 2]                  # the receipt window, not the send window
    d.puback(broker.mid(1))
    d.puback(broker.mid(2))
    assert d.flush() == 0 and box.depth() == 3      # the broker's word is not enough
    assert d.progress().awaiting == 2 and d.progress().delivered_on == "receipt"
    clock.t += 9.9
    assert d.send(broker) == []
    assert d.progress().oldest_awaiting_s == pytest.approx(9.9)
    clock.t += 0.1
    with caplog.at_level(logging.WARNING):
        d.send(broker)
    assert "2 check-in(s) without a receipt from the hospital for 10 s" in caplog.text
    assert broker.seqs() == [1, 2, 1, 2]            # sent again, oldest first, the same ids
    for seq in (1, 2):
        d.puback(broker.mid(seq))
    clock.t += 19.9
    assert d.send(broker) == [] and len(rule.awaiting) == 2   # a second timeout in a row: twice as long
    first, second = (row.id for _, row in broker.published[:2])
    assert d.receipt([first, second]) == (2, []) and box.depth() == 1
    d.send(broker)
    assert broker.seqs() == [1, 2, 1, 2, 3]


def test_receipts_count_only_what_this_station_published_and_awaits():
    rule = OnReceipt(timeout_s=60, window=2)
    d, box, broker, _ = make(4, rule=rule)
    d.send(broker)
    sent = [row.id for _, row in broker.published]
    never = [r.id for r in box.pending(10) if r.id not in sent]
    delivered, unknown = d.receipt(sent[:1] + never)   # in flight (the receipt overtook the PUBACK) + forged
    assert delivered == 1 and unknown == never
    assert d.puback(broker.mid(1)) is None and rule.awaiting == {}   # not awaited again
    d.puback(broker.mid(2))
    assert d.receipt([sent[1], sent[1]]) == (1, [])
    assert d.receipt(sent) == (0, [])               # a repeat for delivered ones: normal, not reported
    assert box.depth() == 2 and [r.id for r in box.pending(10)] == never


def test_a_dropped_or_lost_connection_forgets_the_window():
    d, box, broker, _ = make(3)
    d.send(broker)
    d.puback(broker.mid(1))
    assert d.went_down() == 1 and d.inflight == {}  # what was acked is marked on the way down
    d.connected()
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 2, 3]
    d.puback(broker.mid(2))
    d.drop()                                        # a crash: nothing marked, all sent again
    assert d.flush() == 0 and box.depth() == 2


def test_verdict_rules_once_per_check_in_not_retained_not_stale_not_unknown():
    d, box, broker, clock = make(0, verdict_max_age_s=120)
    fresh, old = box.put(created_at=clock.t - 5), box.put(created_at=clock.t - 300)
    assert d.verdict(Verdict(fresh.id, "accepted"), retained=True)[1][0] == "retained"
    assert d.verdict(Verdict(fresh.id, "accepted"), retained=False) == (0, None)
    assert d.verdict(Verdict(fresh.id, "accepted"), retained=False)[1][0] == "repeated"
    assert d.verdict(Verdict(old.id, "rejected"), retained=False)[1][0] == "stale"
    assert d.verdict(Verdict("019ab1c5-0000-7abc-8def-0123456789ab", "rejected"), False)[1][0] == "unknown"


def test_in_receipt_mode_a_verdict_is_also_the_receipt():
    rule = OnReceipt(timeout_s=60, window=10)
    d, box, broker, clock = make(2, rule=rule)
    d.send(broker)
    d.puback(broker.mid(1))
    first = broker.published[0][1].id
    assert d.verdict(Verdict(first, "accepted"), retained=False) == (1, None)
    assert box.get(first).delivered_at is not None and rule.awaiting == {}
    plain, box2, broker2, _ = make(1)
    plain.send(broker2)
    assert plain.verdict(Verdict(broker2.published[0][1].id, "accepted"), False) == (0, None)


def test_the_config_names_one_rule():
    assert isinstance(rule_for(MqttConfig(delivered_on="broker")), OnPuback)
    rule = rule_for(MqttConfig(delivered_on="receipt", receipt_timeout_s=7, receipt_window=9))
    assert isinstance(rule, OnReceipt) and (rule.timeout_s, rule.window) == (7, 9)
    assert rule.replies == ("verdict", "receipt") and OnPuback.replies == ("verdict",)


# -- the rules' parts on their own (were tests/test_replies.py) ----------------------------------

def row(created_at: float) -> Row:
    return Row("019ab1c2-7d3e-7f00-8a1b-2c3d4e5f6a7b", 1, created_at, {}, None, 1)


def test_receipts_wait_double_and_forget():
    r = OnReceipt(timeout_s=10, window=3)
    r.taken("a", 0.0)
    r.taken("b", 1.0)
    assert r.room(inflight=1) == 0                      # 2 awaiting + 1 in flight fill a window of 3
    assert r.overdue(9.9) is None
    assert r.overdue(10.0) == 10.0 and not r.awaiting   # forgotten: the link sends them again
    r.taken("a", 20.0)
    assert r.overdue(39.0) is None                      # second timeout in a row: twice as long
    assert r.overdue(40.0) == 20.0
    for start in (100.0, 200.0):
        r.taken("a", start)
        r.overdue(start + 1000)
    r.taken("a", 2000.0)
    assert r.overdue(2079.0) is None and r.overdue(2080.0) == 80.0   # capped at 8x
    r.taken("c", 3000.0)
    r.confirmed(["c"], inflight=set())
    assert not r.awaiting and r.misses == 0             # a receipt resets the doubling
    assert r.oldest_age(3001.0) is None


def test_a_receipt_that_overtakes_the_brokers_ack_is_not_awaited_again():
    r = OnReceipt(timeout_s=10, window=10)
    r.confirmed(["x"], inflight={"x"})                 # the consumer was faster than our PUBACK
    r.taken("x", 5.0)
    assert not r.awaiting and not r.early
    assert r.confirmed(["unknown"], inflight=set()) == []   # never published: nothing counted, nothing kept
    assert not r.early
    r.taken("y", 6.0)
    assert r.confirmed(["y", "y", "z"], inflight=set()) == ["y"] and r.confirmed(["y"], inflight=set()) == []


def test_verdict_refusals():
    now = 1000.0
    assert verdict_refusal(row(now - 5), False, now, 120, 3600) is None
    assert verdict_refusal(row(now - 5), True, now, 120, 3600)[0] == "retained"
    assert verdict_refusal(None, False, now, 120, 3600)[0] == "unknown"
    reason, detail = verdict_refusal(row(now - 300), False, now, 120, 3600)
    assert reason == "stale" and "300 s after the read" in detail


# --- issue 32, item 1: a check-in the broker will not take -----------------------------------------

def test_a_check_in_the_broker_refuses_as_too_large_is_set_aside_and_the_rest_go_on():
    """A PUBACK that says the message itself is wrong (too large, malformed) sets that row aside, with
    no pause; a refusal of the topic (an ACL) still backs off and keeps every row queued."""
    d, box, broker, _ = make(3)
    d.send(broker)
    assert d.puback(broker.mid(1), refused="Packet too large") is None
    d.puback(broker.mid(2))
    d.puback(broker.mid(3))
    d.flush()
    assert box.depth() == 0 and box.refused == 1
    first = box.rows[broker.published[0][1].id]
    assert first.undeliverable_at and "Packet too large" in first.undeliverable_reason and first.delivered_at is None
    box.put()
    d.send(broker)
    assert broker.seqs() == [1, 2, 3, 4]          # never sent again, nothing paused
    assert d.puback(broker.mid(4), refused="Not authorized").pause_s > 0 and box.depth() == 1


def test_a_row_the_broker_closes_the_connection_on_twice_in_a_row_is_set_aside():
    """The broker closed the connection for a packet too large (or paho could not read its PUBACK),
    with the same row the oldest it had not acknowledged, twice in a row: that row is set aside. A
    connection lost for any other reason never sets anything aside."""
    d, box, broker, _ = make(4)
    for _ in range(5):                            # a network that keeps dropping: nothing set aside
        d.connected()
        d.send(broker)
        d.went_down("Unspecified error")
    assert box.depth() == 4
    d.connected()
    d.send(broker)
    d.puback(broker.mid(1))                       # the one before it was taken
    d.went_down("Packet too large")
    assert box.depth() == 3 and all(r.undeliverable_at is None for r in box.rows.values())
    d.connected()
    d.send(broker)
    d.went_down("Protocol error")
    second = box.rows[[r.id for r in box.rows.values() if r.seq == 2][0]]
    assert second.undeliverable_at and "closed the connection" in second.undeliverable_reason
    d.connected()
    assert [r.seq for r in d.due()] == [3, 4]


def test_an_ack_or_another_row_clears_the_suspicion():
    d, box, broker, _ = make(3)
    d.send(broker)
    d.went_down("Packet too large")
    d.connected()
    d.send(broker)
    d.puback(broker.mid(1))                       # it went through after all
    d.went_down("Packet too large")               # now the second is the oldest: once only
    assert all(r.undeliverable_at is None for r in box.rows.values())


def test_rows_larger_than_the_broker_or_the_station_takes_are_set_aside_before_sending():
    """The broker's Maximum Packet Size (CONNACK), and the station's own bound for a row an older
    version let in: set aside without a send, the rows behind go out."""
    from agent.event import MAX_CHECKIN_BYTES

    d, box, broker, _ = make(0)
    wide = box.put()
    box.rows[wide.id] = dataclasses.replace(wide, payload={"x": "y" * 500})
    small = box.put()
    d.connected(max_payload=300)
    assert d.send(broker) == [small.id] and broker.seqs() == [2]
    assert "Maximum Packet Size" in box.rows[wide.id].undeliverable_reason
    d.puback(broker.mid(2))
    d.flush()
    huge = box.put()
    box.rows[huge.id] = dataclasses.replace(huge, payload={"x": "y" * MAX_CHECKIN_BYTES})
    d.connected(max_payload=None)
    assert d.send(broker) == [] and f"({MAX_CHECKIN_BYTES} bytes)" in box.rows[huge.id].undeliverable_reason
