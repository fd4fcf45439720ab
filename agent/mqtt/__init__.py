"""mqtt: the station's link to the hospital broker (link.py: drains the outbox, publishes status
and health, takes verdicts) and the JSON Schemas of every payload (schemas.py)."""
