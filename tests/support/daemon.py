"""The real station daemon (`python -m agent run -c CONFIG`) in a subprocess, for fault tests.

It replays the bundled demo frames in a loop with no cooldown, so it records a check-in every
second or so for as long as it runs; its log lines say which sequence numbers it recorded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from agent import runstate

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "agent" / "samples" / "frames"
RECORDED = re.compile(r"check-in #(\d+) ")


def replay_config(state: Path, *, station: str = "demo-station", feedback: str = "none", path: Path | str = FRAMES):
    """A station Config for in-process tests: replay and the feedback backend chosen explicitly
    (the code's defaults are a real station's: picamera2, gpio, /var/lib/scanner-agent)."""
    from agent.config import CameraConfig, Config, FeedbackConfig, StationConfig

    return Config(station=StationConfig(id=station, state_dir=str(state)),
                  camera=CameraConfig(source="replay", path=str(path)), feedback=FeedbackConfig(backend=feedback))


def config(folder: Path, state: Path, *, station: str = "counter-rel", port: int | None = None,
           extra: str = "", mqtt_extra: str = "") -> Path:
    """The daemon's config file: `extra` goes in [outbox], `mqtt_extra` in [mqtt] (with a port)."""
    conf = folder / "config.toml"
    text = f"""
[station]
id = "{station}"
state_dir = "{state}"
[camera]
source = "replay"
path = "{FRAMES}"
fps = 20
loop = true
[checkin]
cooldown_s = 0
[feedback]
backend = "none"
[outbox]
min_free_mb = 0
{extra}
"""
    if port is not None:
        text += f"""
[mqtt]
host = "127.0.0.1"
port = {port}
tls = false
allow_insecure = true
keepalive_s = 5
health_interval_s = 1
{mqtt_extra}
"""
    conf.write_text(text)
    return conf


class Daemon:
    def __init__(self, conf: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.conf = conf
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(conf)],
                                     cwd=cwd or conf.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def recorded(self) -> set[int]:
        """Sequence numbers of the check-ins the daemon recorded (signalled green)."""
        return {int(m.group(1)) for line in self.lines if (m := RECORDED.search(line))}

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log[-3000:]}")
            time.sleep(0.1)
        return predicate()

    def status(self) -> dict:
        out = subprocess.run([sys.executable, "-m", "agent", "status", "-c", str(self.conf), "--json"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode in (0, 1, 2) and "Traceback" not in out.stderr, out.stderr
        info = json.loads(out.stdout)
        from agent.admin.status import level
        assert out.returncode == level(info)[0], (out.returncode, info)   # 1 a warning, 2 a fault
        return info

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


def cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", ROOT), env={**os.environ, "PYTHONPATH": str(ROOT), **kw.pop("env", {})},
                          **kw)


def status_of(pid: int) -> runstate.DaemonStatus:
    return runstate.DaemonStatus(pid=pid, version="t", station="s", started_at=time.time(), updated_at=time.time())
