"""The running daemon's state, shared with `scanner-agent status` through a small JSON file in
the runtime directory (no second camera open, no socket needed for reading)."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import jsonbound
from agent.status_types import CameraStatus, Counters, MqttStatus, OutboxStats, WorkerStatus

STALE_S = 10.0
#: a status file is a few kB; the state dir is the service account's: bounded before parsing
MAX_STATUS_BYTES = 1 << 20
MAX_STATUS_NESTING = 16


@dataclass
class DaemonStatus:
    """The contract between the daemon (writer) and `status`, `doctor`, `snapshot` (readers).
    Each section is the owning component's own status, typed in agent.status_types (the base:
    this module imports none of the components). `faults` are the texts of the station's Faults
    (agent.faults): the file has always held only those. A section the file lacks or has damaged
    is None (workers: empty) and is written back as it was read, {} (mqtt: null)."""
    pid: int
    version: str
    station: str
    started_at: float
    updated_at: float
    #: the grabber's figures with the source's own (crop, exposure: each source says its own)
    camera: CameraStatus | None = None
    #: the link's status() (None: no broker configured)
    mqtt: MqttStatus | None = None
    clock_synced: bool = False
    faults: list[str] = field(default_factory=list)
    #: each worker's status() by its name (alive, crashes, last_crash, fault; the link and the
    #: outputs' writers add their own)
    workers: dict[str, WorkerStatus] = field(default_factory=dict)
    #: the station's Counters
    counters: Counters | None = None
    #: the outbox's summary()
    outbox: OutboxStats | None = None
    #: set by read(): how old the figures are when the daemon could not refresh them (disk full)
    stale_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The status file's JSON, keys in the order it has always had."""
        return {"pid": self.pid, "version": self.version, "station": self.station, "started_at": self.started_at,
                "updated_at": self.updated_at, "camera": self.camera.to_dict() if self.camera else {},
                "mqtt": self.mqtt.to_dict() if self.mqtt else None, "clock_synced": self.clock_synced,
                "faults": list(self.faults), "workers": {name: w.to_dict() for name, w in self.workers.items()},
                "counters": self.counters.to_dict() if self.counters else {},
                "outbox": self.outbox.to_dict() if self.outbox else {}, "stale_s": self.stale_s}

    @classmethod
    def from_dict(cls, data: Any) -> DaemonStatus | None:
        """A status file's contents, or None when they are not one; a damaged section reads as
        empty rather than failing (the file is the daemon's, but never trusted blindly)."""
        if not isinstance(data, dict):
            return None
        try:
            pid, updated = int(data["pid"]), float(data["updated_at"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        faults, mqtt, workers = data.get("faults"), data.get("mqtt"), data.get("workers")
        return cls(pid=pid, version=str(data.get("version", "?")), station=str(data.get("station", "?")),
                   started_at=_number(data.get("started_at")), updated_at=updated,
                   camera=CameraStatus.from_dict(data.get("camera")),
                   mqtt=MqttStatus.from_dict(mqtt) if isinstance(mqtt, dict) else None,
                   clock_synced=data.get("clock_synced") is True,
                   faults=[str(f) for f in faults] if isinstance(faults, list) else [],
                   workers={str(name): WorkerStatus.from_dict(w) for name, w in workers.items()
                            if isinstance(w, dict)} if isinstance(workers, dict) else {},
                   counters=Counters.from_dict(data.get("counters")), outbox=OutboxStats.from_dict(data.get("outbox")))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _read_own(path: Path) -> bytes:
    """The status file's bytes, read as root would read a file of the service account's: never
    through a link (O_NOFOLLOW), only a regular file (not a FIFO or a device), at most
    MAX_STATUS_BYTES + 1 (more is refused by the caller)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, size = [], 0
        while size <= MAX_STATUS_BYTES and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write(path: Path, status: DaemonStatus) -> None:
    """Atomically replace the status file (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(status.to_dict(), f)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk must not leave empty temporary files behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read(path: Path) -> DaemonStatus | None:
    """The daemon's last state if it is running (live pid); None otherwise.

    A file the daemon could not refresh (a full disk) still says the daemon runs, with
    `stale_s`: how old the figures are. A damaged file is as good as none, never a traceback."""
    try:
        state = DaemonStatus.from_dict(jsonbound.loads(_read_own(path), max_bytes=MAX_STATUS_BYTES,
                                                       max_depth=MAX_STATUS_NESTING))
    except (OSError, ValueError):
        return None
    if state is None:
        return None
    pid = state.pid
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return None
    except PermissionError:
        pass  # alive, owned by the service user
    try:  # a pid reused by another program since the daemon died is not the daemon
        if b"agent" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except OSError:
        pass
    age = time.time() - state.updated_at
    state.stale_s = round(age, 1) if age > STALE_S else None
    return state
