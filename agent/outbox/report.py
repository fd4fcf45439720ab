"""What the outbox reports of itself: the figures `status`, the status file and the health message
show. OutboxStats is one of the status file's sections, so it lives with the others in the base
(agent.status_types); it is named here too, where the outbox's readers look for it."""

from __future__ import annotations

from agent.status_types import OutboxStats

__all__ = ["NO_OUTBOX_YET", "OutboxStats"]

#: `status` on a station that has not stored a check-in yet
NO_OUTBOX_YET = OutboxStats.unreadable("no outbox yet", queue_depth=0)
