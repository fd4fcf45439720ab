"""What the tests share: a real Mosquitto on a free port (broker), the real daemon in a subprocess
(daemon), a PostgreSQL cluster of the tests' own (postgres), a fake clock (clock), synthetic card
payloads (payloads), a small tmpfs (tmpfs), a steered camera source driven through the decoder
(steering), and a station process for the kill test (agent_child.py, run as a script)."""
