"""A station process for the kill test: puts check-ins and drains them to the broker.

    python tests/support/agent_child.py DB PORT produce N   # put N check-ins (print each id once stored), then drain
    python tests/support/agent_child.py DB PORT drain       # drain until the outbox is empty
"""

import random
import sys
import time

from agent.cards import read_card
from agent.checkin import checkin_body
from agent.config import MqttConfig
from agent.mqtt.link import MqttLink
from agent.outbox import Outbox
from agent.sim.payloads import cccd

db, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
outbox = Outbox(db, station="kill-test")
cfg = MqttConfig(host="127.0.0.1", port=port, tls=False, allow_insecure=True, keepalive_s=5)
link = MqttLink(cfg, "kill-test", outbox, backoff=(0.05, 0.5), window=16)
link.start()
if mode == "produce":
    for i in range(int(sys.argv[4])):
        row = outbox.put(checkin_body(read_card(cccd(random.Random(i)))))
        print(row.id, flush=True)  # printed only after the commit: the station's green light
        time.sleep(0.002)
deadline = time.time() + 60
while outbox.depth() and time.time() < deadline:
    time.sleep(0.05)
link.stop()
print("DONE" if not outbox.depth() else "TIMEOUT", flush=True)
