"""outbox: check-ins committed to disk before the station signals success, delivered in order."""

from agent.outbox.store import Outbox, OutboxBusy, OutboxError, OutboxFull, Row, uuid7

__all__ = ["Outbox", "OutboxBusy", "OutboxError", "OutboxFull", "Row", "uuid7"]
