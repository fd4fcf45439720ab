"""The check-in event the outbox stores and the MQTT link publishes (agent/schemas/checkin.json),
built here and only here: the body when the card is read, the envelope when the outbox stores it.
A module of its own beside the stages (not in agent/checkin, whose package imports the decoder),
so that the outbox and the IT commands do not load OpenCV to build or read an event."""

from __future__ import annotations

import json
from typing import Any

from agent.cards import CardRead
from agent.clock import clock_synced, now_iso

#: 1.1 added `flags` (additive: a 1.0 consumer ignores it); 1.2 `chip` (the CCCD chip's read, when
#: the station has a reader) and the flag `chip_mismatch` (additive: a 1.1 consumer ignores them)
SCHEMA_VERSION = "1.2"
#: The largest check-in the station stores or publishes, as published (UTF-8 JSON, `encode`). A
#: real one is about 1 kB. The largest the card reader accepts (8 192 characters, every text field
#: at its cap in 4-byte characters, the rest in an old-ID field the reader leaves out) gives about 12 kB
#: (tests/test_outbox.py); a broker set up as docs/integrating.md says takes 64 kB. So every card
#: read can be stored, and what is stored can always be sent.
MAX_CHECKIN_BYTES = 32_768


def checkin_body(read: CardRead, *, synced: bool | None = None, flags: list[str] | None = None,
                 at: float | None = None, chip: dict[str, Any] | None = None) -> dict[str, Any]:
    """What is known when the card is read: read_at (`at`, the frame's capture time, default now),
    clock_synced, the card read and the counter facts (agent.cards.flags); `chip`: the CCCD chip's
    read (agent.chip.counter.chip_field), left out when the station has no reader."""
    body = {"read_at": now_iso(at), "clock_synced": clock_synced() if synced is None else synced,
            **read.to_dict(), "flags": list(flags or [])}
    if chip is not None:
        body["chip"] = chip
    return body


def envelope(body: dict[str, Any], *, event_id: str, seq: int, station: str) -> dict[str, Any]:
    """The whole event: the envelope (schema, id, seq, station) the outbox assigns in the same
    transaction that stores it, then the body."""
    return {"schema": SCHEMA_VERSION, "id": event_id, "seq": seq, "station": station, **body}


def encode(event: dict[str, Any]) -> bytes:
    """The event as stored and published: UTF-8 JSON, the one serialisation whose size counts."""
    return json.dumps(event, ensure_ascii=False).encode("utf-8")
