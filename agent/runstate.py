"""The running daemon's state, shared with `scanner-agent status` through a small JSON file in
the runtime directory (no second camera open, no socket needed for reading)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STALE_S = 10.0


def runtime_dir(state_dir: str | Path) -> Path:
    """systemd's RuntimeDirectory= (RUNTIME_DIRECTORY), else `{state_dir}/run`."""
    env = os.environ.get("RUNTIME_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path(state_dir) / "run"


def write(path: Path, state: dict[str, Any]) -> None:
    """Atomically replace the status file (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".status-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        try:  # a full disk must not leave empty temporary files behind
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read(path: Path) -> dict[str, Any] | None:
    """The daemon's last state if it is running (live pid); None otherwise.

    A file the daemon could not refresh (a full disk) still says the daemon runs, with
    `stale_s`: how old the figures are. A damaged file is as good as none, never a traceback."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    try:
        pid, updated = int(state["pid"]), float(state["updated_at"])
        os.kill(pid, 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError, OverflowError):
        return None
    except PermissionError:
        pass  # alive, owned by the service user
    try:  # a pid reused by another program since the daemon died is not the daemon
        if b"agent" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
    except OSError:
        pass
    age = time.time() - updated
    state["stale_s"] = round(age, 1) if age > STALE_S else None
    return state
