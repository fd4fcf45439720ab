"""outbox: check-ins committed to disk before the station signals success, delivered in order.

store (the queue: Outbox), errors (SQLite's errors in IT's words), files (modes, -wal/-shm, a
damaged file moved aside), report (OutboxStats: what is reported), salvage (reading a damaged file;
pagescan, its search for check-ins by their JSON text), kept (the daemon's look into a kept one)."""

from agent.outbox.errors import OutboxBusy, OutboxError, OutboxFull, TooLarge, integrity
from agent.outbox.files import delete_files
from agent.outbox.report import OutboxStats
from agent.outbox.store import Outbox, Row, uuid7

__all__ = ["Outbox", "OutboxBusy", "OutboxError", "OutboxFull", "OutboxStats", "Row", "TooLarge",
           "delete_files", "integrity", "uuid7"]
