"""outbox: check-ins committed to disk before the station signals success, delivered in order."""

from agent.outbox.store import Outbox, OutboxError, OutboxFull, Row, uuid7

__all__ = ["Outbox", "OutboxError", "OutboxFull", "Row", "uuid7"]
