"""The reply rules on their own (agent/mqtt/replies.py): receipt bookkeeping and verdict refusals.
tests/test_contract.py runs the same rules through a real broker."""

from agent.mqtt.replies import Receipts, verdict_refusal
from agent.outbox import Row


def row(created_at: float) -> Row:
    return Row("019ab1c2-7d3e-7f00-8a1b-2c3d4e5f6a7b", 1, created_at, {}, None, 1)


def test_receipts_wait_double_and_forget():
    r = Receipts(timeout_s=10, window=3)
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
    r = Receipts(timeout_s=10, window=10)
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
