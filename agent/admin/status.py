"""`scanner-agent status`: works whether the daemon runs (reads its status file) or not."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from agent import __version__, paths, runstate
from agent.cards.sanitize import one_line
from agent.clock import clock_synced
from agent.config import Config
from agent.outbox import Outbox, OutboxError, OutboxStats
from agent.outbox.report import NO_OUTBOX_YET
from agent.outputs import record as output_record
from agent.status_types import CameraStatus, ChipStatus, Counters, MqttStatus

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


def outbox_summary(db: Path) -> OutboxStats:
    """Queue figures from the outbox opened read-only (safe beside the running daemon)."""
    if not db.exists():
        return NO_OUTBOX_YET
    try:
        box = Outbox(db, station="-", readonly=True)
    except OutboxError as exc:
        return OutboxStats.unreadable(exc)
    try:
        return box.summary()
    finally:
        box.close()



def from_memory(state_dir: Path, stale: runstate.DaemonStatus) -> runstate.DaemonStatus:
    """The running daemon's state from its memory through the control socket (its status file may
    be behind: a full disk stops its refresh); the file's when the socket does not answer."""
    from agent import jsonbound
    from agent.control import request

    try:
        live = runstate.DaemonStatus.from_dict(jsonbound.loads(request(paths.control_socket(state_dir), "status",
                                                                       timeout=3, max_bytes=1 << 20),
                                                               max_bytes=1 << 20, max_depth=runstate.MAX_STATUS_NESTING))
    except (OSError, RuntimeError, ValueError, IndexError):
        return stale
    if live is None or live.pid != stale.pid:
        return stale
    live.stale_s = stale.stale_s    # the file is not being refreshed: say so (disk full?)
    return live


def collect(cfg: Config) -> dict[str, Any]:
    state_dir = Path(cfg.station.state_dir)
    daemon = runstate.read(paths.status_file(state_dir))
    if daemon is not None:   # fresher, and there even when the file cannot be written (a full disk)
        daemon = from_memory(state_dir, daemon)
    usage = shutil.disk_usage(state_dir if state_dir.exists() else state_dir.parent if state_dir.parent.exists() else "/")
    outbox = outbox_summary(paths.outbox(state_dir))
    faults = [one_line(f) for f in daemon.faults] if daemon else []
    if not daemon:  # the daemon is not there to say it: damaged outbox files kept aside are a fault
        faults += [f"outbox: damaged file {p} kept; see 'scanner-agent queue import {p}'"
                   for p in outbox.damaged_files]
        # and so are lines an output dropped or typed short that IT has not acknowledged (a state
        # dir this user cannot search, not the service user or root: nothing to say)
        if os.access(state_dir, os.X_OK):
            faults += [one_line(lost.text(kind), 400) for kind in output_record.KINDS
                       if (lost := output_record.load(paths.output_record(state_dir, kind))) is not None]
    return {
        "station": cfg.station.id, "version": __version__, "service": service_state(),
        "daemon": "running" if daemon else "stopped",
        "status_stale_s": daemon.stale_s if daemon else None,
        "camera": (daemon.camera.to_dict() if daemon and daemon.camera else {"source": cfg.camera.source, "fault": None}),
        "mqtt": (daemon.mqtt.to_dict() if daemon and daemon.mqtt else None) if cfg.mqtt else {"configured": False},
        "outbox": outbox.to_dict(),
        "clock_synced": clock_synced(),
        "disk_free_mb": round(usage.free / 1e6),
        "faults": faults,
        "counters": daemon.counters.to_dict() if daemon and daemon.counters else None,
        "workers": ({name: w.to_dict() for name, w in daemon.workers.items()} or None) if daemon else None,
    }


OK, WARNING, FAULT = 0, 1, 2


def level(s: dict[str, Any]) -> tuple[int, list[str]]:
    """The exit status of `status` (0 ok, 1 a warning, 2 a fault, as the README says) and why."""
    # the voice is a warning, never a fault: the LEDs still say everything
    faults = [f for f in s["faults"] if not f.startswith("voice:")]
    warnings = [f for f in s["faults"] if f.startswith("voice:")]
    cam = s.get("camera") or {}
    if cam.get("fault") and not any(f.startswith("camera") for f in faults):
        faults.append(f"camera: {cam['fault']}")
    ob = s.get("outbox") or {}
    if ob.get("error") and ob.get("error") != "no outbox yet":
        faults.append(f"outbox: {ob['error']}")
    if faults:
        return FAULT, faults
    if (warning := _camera_warning(cam)) is not None:   # the station reads as "fixed" does: a warning
        warnings.append(warning)
    if s["daemon"] != "running":
        warnings.append("daemon not running")
    elif s.get("status_stale_s"):
        warnings.append("status not updated")
    mq = s.get("mqtt")
    if isinstance(mq, dict) and mq.get("configured") is not False and not mq.get("connected"):
        warnings.append("broker disconnected")
    if aside := (OutboxStats.from_dict(ob) or NO_OUTBOX_YET).undeliverable:
        warnings.append(f"{aside} check-in(s) undeliverable: see 'scanner-agent queue list'")
    if not s.get("clock_synced"):
        warnings.append("clock not synchronised")
    return (WARNING, warnings) if warnings else (OK, [])
def _camera_warning(cam: Any) -> str | None:
    """The camera's warning (control "auto" gone back to the fixed view), from its section."""
    camera = CameraStatus.from_dict(cam)
    return camera.controls.warning() if camera is not None and camera.controls is not None else None


def _view(cam: CameraStatus) -> str:
    """The crop and exposure the camera is using (a camera that steers itself), as IT reads them."""
    if cam.view is None:
        return ""
    x, y, w, h = cam.view.crop
    text = f"; crop {w}x{h}+{x}+{y}, exposure {cam.view.exposure_us} us, gain {cam.view.gain}"
    if cam.controls is not None and cam.controls.control == "auto":
        text += f" (auto: {cam.controls.state}" + (", gone back to the fixed view)" if cam.controls.fallback else ")")
    return text


def _chip(st: ChipStatus) -> str:
    """The CCCD chip reader's line: the reader, whether it works, the reads by outcome."""
    state = f"NOT usable: {one_line(st.problem)}" if st.problem else "FAULT: " + one_line(st.fault) if st.fault else "ok"
    reads = ", ".join(f"{n} {k}" for k, n in sorted(st.reads.items())) or "none yet"
    return f"{one_line(st.reader, 20)} {state}; reads: {reads}"


def _age(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def render(s: dict[str, Any]) -> str:
    """collect()'s report for people; its sections read back into their dataclasses."""
    ob = OutboxStats.from_dict(s["outbox"]) or NO_OUTBOX_YET
    cam = CameraStatus.from_dict(s["camera"]) or CameraStatus("?")
    counters = Counters.from_dict(s.get("counters")) or Counters()
    if s["mqtt"] is None:
        broker = "unknown (daemon stopped)"
    elif s["mqtt"].get("configured") is False:
        broker = "not configured: check-ins queue locally"
    else:
        mq = MqttStatus.from_dict(s["mqtt"])
        broker = f"{mq.broker} " + ("connected" if mq.connected else f"DISCONNECTED: {one_line(mq.last_error)}")
        if mq.delivered_on == "receipt":
            broker += f"; {mq.awaiting_receipt} awaiting the hospital's receipt"
    last = ob.last_checkin_at
    daemon = s["daemon"] + (f" (status not updated for {_age(s['status_stale_s'])}: disk full?)"
                            if s.get("status_stale_s") else "")
    lines = [
        f"station      {s['station']} (scanner-agent {s['version']})",
        f"service      {s['service']}; daemon {daemon}",
        f"camera       {cam.source}" + (f" FAULT: {cam.fault}" if cam.fault else
                                         (" ok" if s["daemon"] == "running" else "")) + _view(cam),
        f"broker       {broker}",
        f"queue        {ob.queue_depth} undelivered; oldest {_age(ob.oldest_undelivered_age_s)}"
        + (f" ({ob.error})" if ob.error else "")
        + (f"; {ob.undeliverable} UNDELIVERABLE (set aside, no longer sent: the broker will not take them; "
           "'queue list', then 'queue remove ID --export FILE')" if ob.undeliverable else ""),
        f"last check-in {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last)) if last else '-'}",
        f"clock        {'synchronised' if s['clock_synced'] else 'NOT synchronised (check NTP)'}",
        f"disk free    {s['disk_free_mb']} MB",
    ]
    rec = ob.recovery
    if rec is not None:
        lines.append(f"recovered    damaged outbox at {time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.get('at') or 0))}: "
                     f"{rec.get('saved')} salvaged, {'unknown' if rec.get('lost') is None else rec.get('lost')} lost")
    if reasons := counters.last_guidance:
        lines.append("try again    last reasons (newest last): " + ", ".join(one_line(r.get("reason")) for r in reasons))
    chip = (s.get("workers") or {}).get("chip")
    if isinstance(chip, dict):
        lines.append(f"chip reader  {_chip(ChipStatus.from_dict(chip))}")
    lines += [f"WARNING      {f}" if f.startswith("voice:") else f"FAULT        {f}" for f in s["faults"]]
    if (warning := _camera_warning(s["camera"])) is not None:
        lines.append(f"WARNING      {warning}")
    code, why = level(s)
    lines.append(f"check        {('OK', 'WARNING', 'FAULT')[code]}" + (f": {'; '.join(why)}" if why else ""))
    return "\n".join(lines)
