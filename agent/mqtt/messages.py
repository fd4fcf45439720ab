"""What the station says and hears on MQTT, apart from how it is sent: the MQTT counterparts of
agent/event.py. Topics, the status (and last will), health and `ignored` payloads
(agent/schemas/*.json, docs/asyncapi.yaml), the hospital's replies read into a typed `Verdict`
or a receipt's ids, and the rate limit on ignored replies. No paho here: plain data, testable
without a broker.

Topics, with {p} the prefix and {s} the station id (docs/integrating.md):
  {p}/{s}/checkin  QoS 1, not retained: check-in events, drained from the outbox in order
  {p}/{s}/status   retained: online on connect; offline as last will and on clean shutdown
  {p}/{s}/health   retained, every health_interval_s
  {p}/{s}/verdict  subscribed: the hospital's answer to a check-in
  {p}/{s}/receipt  subscribed in receipt mode: the hospital's consumer confirms stored check-ins
  {p}/{s}/ignored  QoS 1, not retained: a verdict or receipt the station did not act on, and why
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from agent import __version__, jsonbound
from agent.cards.sanitize import one_line
from agent.clock import clock_synced, now_iso
from agent.mqtt.schemas import errors as schema_errors
from agent.outbox.report import OutboxStats

MAX_VERDICT_BYTES = 4096
MAX_REPLY_NESTING = 8       # a verdict nests 1 deep, a receipt 2: bounded before parsing
NOTICE_EVERY_S = 60.0        # ignored messages: one log line per minute at most
NOTICES_PER_MINUTE = 30      # 'ignored' notices published, at most (a flood is not echoed)
TOPICS = ("checkin", "status", "health", "verdict", "receipt", "ignored")


def topics(prefix: str, station: str) -> dict[str, str]:
    return {name: f"{prefix}/{station}/{name}" for name in TOPICS}


def status_payload(state: str, station: str, reason: str | None = None,
                   since: float | None = None) -> dict[str, Any]:
    """The status message (agent/schemas/status.json): online, or offline (the last will too)."""
    status = {"state": state, "station": station, "at": now_iso(), "version": __version__, "since": now_iso(since)}
    if reason:
        status["reason"] = reason
    return status


def health_payload(station: str, stats: OutboxStats, *, uptime_s: float, delivered_on: str,
                   awaiting: int = 0, oldest_awaiting_s: float | None = None, faults: list[str] = (),
                   fault_codes: list[str] | None = None, camera_fallback: str | None = None,
                   chip_reader: dict[str, Any] | None = None) -> dict[str, Any]:
    """The health message (agent/schemas/health.json), from the outbox's stats(): built here for
    the link and for doctor's probe. `fault_codes` None: unknown, left out. `camera_fallback`: why
    control "auto" went back to the fixed view (a warning, not a fault: left out when it has not)."""
    report = {"station": station, "at": now_iso(), "version": __version__, "uptime_s": round(max(0.0, uptime_s), 1),
              "queue_depth": stats.queue_depth or 0, "oldest_undelivered_age_s": stats.oldest_undelivered_age_s,
              "delivered_total": stats.delivered_total, "failed_total": stats.failed_total,
              "undeliverable": stats.undeliverable or 0, "delivered_on": delivered_on, "awaiting_receipt": awaiting,
              "oldest_awaiting_receipt_s": None if oldest_awaiting_s is None else round(oldest_awaiting_s, 1),
              "clock_synced": clock_synced(), "faults": list(faults)}
    if fault_codes is not None:
        report["fault_codes"] = sorted(set(fault_codes))
    if camera_fallback is not None:
        report["camera_fallback"] = one_line(camera_fallback, 400)
    if chip_reader is not None:      # [chip] reader configured (agent.chip.counter.ChipReader.health)
        report["chip_reader"] = {**chip_reader, "problem": None if chip_reader.get("problem") is None
                                 else one_line(chip_reader["problem"], 200)}
    return report


def ignored_notice(station: str, kind: str, event_id: str | None, reason: str, detail: str) -> dict[str, Any]:
    """The `ignored` message (agent/schemas/ignored.json): what the station did not act on, and why."""
    return {"station": station, "at": now_iso(), "message": kind, "id": event_id, "reason": reason,
            "detail": one_line(detail, 200)}


@dataclass(frozen=True)
class Verdict:
    """The hospital's answer to a check-in (agent/schemas/verdict.json), every text cleaned."""
    id: str
    result: str                  # "accepted" | "rejected"
    code: str | None = None      # the insurance portal's result code, e.g. "000"
    message: str | None = None   # for staff, in logs: control characters removed, cut at 200

    @property
    def accepted(self) -> bool:
        return self.result == "accepted"


def read_reply(kind: str, payload: bytes) -> Verdict | list[str]:
    """A verdict, or a receipt's ids, from an untrusted payload: bounded in size and nesting
    before parsing, checked against its schema. Raises ValueError (or a json error) saying why not."""
    if len(payload) > MAX_VERDICT_BYTES:
        raise ValueError(f"{len(payload)} bytes is too large")
    data = jsonbound.loads(payload, max_bytes=MAX_VERDICT_BYTES, max_depth=MAX_REPLY_NESTING)
    problems = schema_errors(kind, data)
    if problems:
        raise ValueError(problems[0])
    if kind == "receipt":
        return list(data["ids"])
    clean = {k: one_line(v, 200) if isinstance(v, str) else v for k, v in data.items()}
    return Verdict(clean["id"], clean["result"], clean.get("code"), clean.get("message"))


@dataclass
class IgnoredNotices:
    """How much is said about ignored replies: a log line a minute at most (the rest counted and
    summed up on a timer, so a flood that stopped still leaves its count), and at most
    `per_minute` notices on the `ignored` topic (a flood is not echoed). The caller logs and
    publishes; this decides when. `clock`: monotonic seconds (injectable for tests)."""
    log_every_s: float = NOTICE_EVERY_S
    per_minute: int = NOTICES_PER_MINUTE
    clock: Callable[[], float] = time.monotonic
    count: int = 0                  # ignored since the last line
    last: str = ""                  # the last one not logged, e.g. "malformed verdict"
    logged_at: float = -1e9
    sent: list[float] = field(default_factory=list)

    def log_now(self, what: str) -> int | None:
        """One more ignored (`what`, e.g. "stale verdict"): the count to log now with it, else None."""
        self.count += 1
        now = self.clock()
        if now - self.logged_at >= self.log_every_s:
            count, self.count, self.logged_at = self.count, 0, now
            return count
        self.last = what
        return None

    def may_publish(self) -> bool:
        """Whether one more notice fits in the last minute's allowance (counted when it does)."""
        now = self.clock()
        self.sent = [t for t in self.sent if now - t < 60.0]
        if len(self.sent) >= self.per_minute:
            return False
        self.sent.append(now)
        return True

    def summary(self, force: bool = False) -> tuple[int, float, str] | None:
        """(count, seconds, last) of those not logged yet, once their line is due (`force`: now)."""
        now = self.clock()
        if not self.count or (not force and now - self.logged_at < self.log_every_s):
            return None
        out = (self.count, now - self.logged_at, self.last)
        self.count, self.logged_at = 0, now
        return out
