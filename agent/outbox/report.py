"""What the outbox reports of itself: the figures `status`, the status file and the health message
show. One dataclass, written to JSON by to_dict() in the exact shape (keys, order) those files and
messages have always had."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OutboxStats:
    """The outbox's figures, or (with `error`) why they are unknown."""
    queue_depth: int | None
    oldest_undelivered_age_s: float | None
    last_checkin_at: float | None
    delivered_total: int = 0
    failed_total: int = 0
    #: the damaged file this outbox replaced since the daemon started (None: none)
    recovered_from: str | None = None
    #: the last salvage from a damaged file (kept in the outbox, so it survives restarts)
    recovery: dict[str, Any] | None = None
    #: damaged files kept aside that still need IT's import
    damaged_files: list[str] = field(default_factory=list)
    #: set when the outbox could not be read: the figures above are then unknown
    error: str | None = None

    @classmethod
    def unreadable(cls, why: BaseException | str, *, queue_depth: int | None = None) -> "OutboxStats":
        """The figures unknown, and why (the outbox cannot be read, or there is none yet)."""
        return cls(queue_depth=queue_depth, oldest_undelivered_age_s=None, last_checkin_at=None, error=str(why))

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"queue_depth": self.queue_depth, "oldest_undelivered_age_s": self.oldest_undelivered_age_s,
                    "last_checkin_at": self.last_checkin_at, "error": self.error}
        return {"queue_depth": self.queue_depth, "oldest_undelivered_age_s": self.oldest_undelivered_age_s,
                "delivered_total": self.delivered_total, "failed_total": self.failed_total,
                "last_checkin_at": self.last_checkin_at, "recovered_from": self.recovered_from,
                "recovery": self.recovery, "damaged_files": list(self.damaged_files)}


#: `status` on a station that has not stored a check-in yet
NO_OUTBOX_YET = OutboxStats.unreadable("no outbox yet", queue_depth=0)
