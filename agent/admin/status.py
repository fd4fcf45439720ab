"""`scanner-agent status`: works whether the daemon runs (reads its status file) or not."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from agent import __version__, runstate
from agent.clock import clock_synced
from agent.config import Config

SERVICE = "scanner-agent"


def service_state() -> str:
    """systemd's view of the service, or 'unknown' where there is no systemd."""
    if not shutil.which("systemctl"):
        return "unknown"
    try:
        out = subprocess.run(["systemctl", "is-active", SERVICE], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def outbox_summary(db: Path) -> dict[str, Any]:
    """Queue figures straight from the database, read-only (safe beside the running daemon)."""
    if not db.exists():
        return {"queue_depth": 0, "oldest_undelivered_age_s": None, "last_checkin_at": None, "error": "no outbox yet"}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        depth, oldest = conn.execute("SELECT COUNT(*), MIN(created_at) FROM events WHERE delivered_at IS NULL").fetchone()
        last = conn.execute("SELECT MAX(created_at) FROM events").fetchone()[0]
        conn.close()
    except sqlite3.Error as exc:
        return {"queue_depth": None, "oldest_undelivered_age_s": None, "last_checkin_at": None, "error": str(exc)}
    return {"queue_depth": depth, "oldest_undelivered_age_s": round(time.time() - oldest, 1) if oldest else None,
            "last_checkin_at": last}


def collect(cfg: Config) -> dict[str, Any]:
    state_dir = Path(cfg.station.state_dir)
    daemon = runstate.read(runstate.runtime_dir(state_dir) / "status.json")
    usage = shutil.disk_usage(state_dir if state_dir.exists() else state_dir.parent if state_dir.parent.exists() else "/")
    return {
        "station": cfg.station.id, "version": __version__, "service": service_state(),
        "daemon": "running" if daemon else "stopped",
        "camera": (daemon or {}).get("camera", {"source": cfg.camera.source, "fault": None}),
        "mqtt": (daemon or {}).get("mqtt") if cfg.mqtt else {"configured": False},
        "outbox": outbox_summary(state_dir / "outbox.db"),
        "clock_synced": clock_synced(),
        "disk_free_mb": round(usage.free / 1e6),
        "faults": (daemon or {}).get("faults", []),
        "counters": (daemon or {}).get("counters"),
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def render(s: dict[str, Any]) -> str:
    ob, mq, cam = s["outbox"], s["mqtt"], s["camera"]
    if mq is None:
        broker = "unknown (daemon stopped)"
    elif mq.get("configured") is False:
        broker = "not configured: check-ins queue locally"
    else:
        broker = f"{mq['broker']} " + ("connected" if mq["connected"] else f"DISCONNECTED: {mq['last_error']}")
    last = ob.get("last_checkin_at")
    lines = [
        f"station      {s['station']} (scanner-agent {s['version']})",
        f"service      {s['service']}; daemon {s['daemon']}",
        f"camera       {cam.get('source')}" + (f" FAULT: {cam['fault']}" if cam.get("fault") else
                                              (" ok" if s["daemon"] == "running" else "")),
        f"broker       {broker}",
        f"queue        {ob.get('queue_depth')} undelivered; oldest {_age(ob.get('oldest_undelivered_age_s'))}"
        + (f" ({ob['error']})" if ob.get("error") else ""),
        f"last check-in {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last)) if last else '-'}",
        f"clock        {'synchronised' if s['clock_synced'] else 'NOT synchronised (check NTP)'}",
        f"disk free    {s['disk_free_mb']} MB",
    ]
    lines += [f"FAULT        {f}" for f in s["faults"]]
    return "\n".join(lines)
