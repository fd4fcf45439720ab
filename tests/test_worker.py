"""Supervision (agent/worker.py, the systemd watchdog): a crashing worker is a fault and
restarts, and the watchdog pings stop while a worker is stuck."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.config import MqttConfig
from support.broker import Subscriber
from support.daemon import replay_config
from support.wait import wait_for


# --- supervision: the worker base and the watchdog ------------------------------------------------

def test_a_crashing_worker_is_a_fault_then_restarts_and_logs_one_traceback(caplog):
    from agent.worker import Worker

    class Flaky(Worker):
        def __init__(self, crashes: int):
            super().__init__("flaky", restart_backoff=(0.01, 0.05))
            self.left, self.runs = crashes, 0

        def work(self) -> None:
            self.runs += 1
            if self.left:
                self.left -= 1
                raise RuntimeError("boom \x1b[31m")
            while not self.wait(0.05):
                pass

    w = Flaky(3).start()
    try:
        assert Subscriber.wait_for(lambda: w.runs == 4, 5)
        assert w.crashes == 3 and "flaky worker crashed" in w.fault and "\x1b" not in w.fault
        assert w.alive and w.healthy()
    finally:
        w.stop()
    assert not w.alive and w.fault is None
    assert caplog.text.count("Traceback") == 1 and caplog.text.count("crashed again") == 2


@pytest.mark.slow
def test_watchdog_pings_stop_while_a_worker_is_stuck(tmp_path, broker, monkeypatch):
    from agent import failpoints
    from agent.config import Config
    from agent.feedback import Feedback
    from agent.feedback.player import NoOutput
    from agent.station import Station

    pings = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    pings.bind(str(tmp_path / "notify"))
    pings.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")            # a ping every 0.2 s
    cfg = replay_config(tmp_path / "state")
    cfg.camera.loop = True
    cfg.mqtt = MqttConfig(host="127.0.0.1", port=broker.port, tls=False, allow_insecure=True)
    station = Station(cfg, feedback=Feedback(NoOutput()))
    station.link.stall_s = 1.0
    release = threading.Event()
    runner = threading.Thread(target=station.run)
    runner.start()

    def count_pings(seconds: float) -> int:
        n, end = 0, time.time() + seconds
        while time.time() < end:
            try:
                n += pings.recv(256) == b"WATCHDOG=1"
            except TimeoutError:
                pass
        return n
    try:
        assert wait_for(lambda: station.link.state.connected, 30)   # the failpoint is in the connected pump
        assert count_pings(1.5) >= 3                           # all healthy: pings flow
        failpoints.arm("mqtt.pump", 1, action=release.wait)    # the sender hangs in a call
        assert wait_for(lambda: any("mqtt-link worker stuck" in f for f in station.faults()), 30)
        count_pings(0.3)                                       # (pings sent before it was found stuck)
        assert count_pings(1.5) == 0                           # systemd would restart the service
        assert any("mqtt-link worker stuck" in f for f in station.faults())
        release.set()
        assert count_pings(1.5) >= 3                           # unstuck: pings again
    finally:
        release.set()
        failpoints.arm("mqtt.pump", 0)
        station.stop()
        runner.join(10)
        broker.stop()
        pings.close()
