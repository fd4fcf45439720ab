"""`scanner-agent run`: start the station and run it until SIGTERM or Ctrl-C.

A station that cannot start says why in one line and raises CannotStart; whether systemd should
try again (exit 1) or a person must change something first (exit 2) is decided by the command
line's one exit-status mapping (agent/cli.py)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from agent import paths
from agent.config import CameraConfig, Config, FeedbackConfig, StationConfig


class CannotStart(Exception):
    """The station could not start; `lines` say why, `retry` whether it may work by itself later
    (another process holds the outbox, the disk is full) rather than only after a fix."""

    def __init__(self, lines: list[str], *, retry: bool):
        super().__init__("; ".join(lines))
        self.lines, self.retry = lines, retry


def demo_config() -> Config:
    """The demo, chosen explicitly (the code's defaults are a real station's): bundled frames
    replayed, console signals, ./state, no broker."""
    return Config(station=StationConfig(state_dir="state"),
                  camera=CameraConfig(source="replay", fps=4.0),  # slow enough to watch each presentation
                  feedback=FeedbackConfig(backend="console"))


def setup_logging(level: str) -> None:
    # under systemd the journal adds its own timestamps
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stderr, force=True)


def disk_full(state_dir: str, exc: BaseException) -> bool:
    """The error says the disk is full, or there is no free block or inode where the outbox lives
    (what SQLite needs to open it)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        st = os.statvfs(state_dir)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


def start(cfg: Config):
    """The station, built (outbox opened, broker link made); CannotStart when it cannot be."""
    from agent.mqtt.session import InsecureBroker
    from agent.outbox import OutboxError
    from agent.outbox import OutboxBusy
    from agent.station import Station

    try:
        return Station(cfg)
    except OutboxBusy as exc:  # another process holds the outbox: systemd tries again shortly
        raise CannotStart([f"error: {exc}"], retry=True) from None
    except (InsecureBroker, OutboxError, OSError, ssl.SSLError, ValueError) as exc:
        # OSError, SSLError, ValueError: e.g. a CA or key file that is not PEM
        lines = [f"error: {exc}" if isinstance(exc, (InsecureBroker, OutboxError))
                 else f"error: cannot start the station: {type(exc).__name__}: {exc}"]
        if isinstance(exc, (OutboxError, OSError)) and disk_full(cfg.station.state_dir, exc):
            # not the config's fault: systemd tries again (exit 2 it never restarts), and the
            # station comes back by itself once space is freed
            raise CannotStart(lines + [f"error: the disk of {cfg.station.state_dir} is full: free space there"],
                              retry=True) from None
        raise CannotStart(lines, retry=False) from None


def run(cfg: Config | None) -> int:
    """Run the station `cfg` describes (None: the demo) until SIGTERM or SIGINT."""
    if cfg is None:
        cfg = demo_config()
        print("scanner-agent demo: no config given (-c CONFIG for a real station). Replaying bundled "
              f"sample frames; check-ins queue in {paths.outbox(Path(cfg.station.state_dir).resolve())}. "
              "Ctrl-C to stop.", flush=True)
    setup_logging(cfg.logging.level)
    station = start(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: station.stop())
    station.run()
    return 0
