"""mqtt: the station's link to the hospital broker. link.py: the worker, the connection and paho's
callbacks; delivery.py: the delivery rules (send window, acks, receipts, verdicts), no paho;
messages.py: topics and payloads (status, health, ignored notices, Verdict), no paho; session.py:
the client, TLS and `describe`, shared with doctor and fleet; schemas.py: the payloads' JSON
Schemas."""
