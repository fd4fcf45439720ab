"""What the tests share: a real Mosquitto on a free port (broker), the real daemon in a subprocess
(daemon), synthetic card payloads (payloads), and a station process for the kill test
(agent_child.py, run as a script)."""
