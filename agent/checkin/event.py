"""The check-in event body the outbox stores and the MQTT link publishes (agent/schemas/checkin.json)."""

from __future__ import annotations

from typing import Any

from agent.cards import CardRead
from agent.clock import clock_synced, now_iso


def checkin_body(read: CardRead, *, synced: bool | None = None) -> dict[str, Any]:
    """read_at, clock_synced and the card read; the outbox adds schema, id, seq and station."""
    return {"read_at": now_iso(), "clock_synced": clock_synced() if synced is None else synced,
            **read.to_dict()}
