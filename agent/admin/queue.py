"""`scanner-agent queue`: inspect the outbox, force a resend, export for manual entry.

Names, birth dates, addresses and card numbers are masked unless --reveal. Nothing here deletes
an undelivered check-in.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agent.cards import mask_name
from agent.outbox import Outbox

PRIVATE = ("name", "address", "guardian", "birth_date", "card_number", "bhxh_number", "id_number",
           "old_id_number", "management_code", "check_string", "extra")


def masked(payload: dict[str, Any]) -> dict[str, Any]:
    card = dict(payload.get("card", {}))
    for key in PRIVATE:
        value = card.get(key)
        if value in (None, "", []):
            continue
        if key == "name":
            card[key] = mask_name(value)
        elif key == "birth_date":
            card[key] = str(value)[:4] + "-**-**" if len(str(value)) > 4 else "****"
        elif isinstance(value, str) and key.endswith(("number", "code")) and len(value) > 4:
            card[key] = "*" * (len(value) - 4) + value[-4:]
        else:
            card[key] = "***"
    return {**payload, "card": card}


def list_rows(box: Outbox, *, limit: int, undelivered_only: bool, reveal: bool) -> list[str]:
    rows = box.pending(limit) if undelivered_only else box.recent(limit)
    lines = [f"{'seq':>6}  {'stored':19}  {'state':11}  {'kind':4}  {'verdict':13}  name"]
    for r in rows:
        name = r.payload.get("card", {}).get("name")
        lines.append(f"{r.seq:>6}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.created_at))}  "
                     f"{'delivered' if r.delivered_at else 'QUEUED':11}  {r.payload.get('kind', '?'):4}  "
                     f"{r.payload.get('verdict', '?'):13}  {name if reveal else mask_name(name)}  {r.id}")
    return lines


def show(box: Outbox, event_id: str, reveal: bool) -> dict[str, Any] | None:
    row = box.get(event_id)
    if row is None:
        return None
    return {"id": row.id, "seq": row.seq, "stored_at": row.created_at, "delivered_at": row.delivered_at,
            "attempts": row.attempts, "payload": row.payload if reveal else masked(row.payload)}


def export(box: Outbox, path: Path) -> int:
    """Undelivered check-ins as JSON lines (full records: they are for manual entry), mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    n = 0
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for row in box.iter_pending():
            f.write(json.dumps(row.payload, ensure_ascii=False) + "\n")
            n += 1
    return n


def retry(box: Outbox, ids: list[str]) -> list[str]:
    """Mark delivered check-ins undelivered again so the daemon resends them; returns unknown ids."""
    return [i for i in ids if not box.requeue(i)]
