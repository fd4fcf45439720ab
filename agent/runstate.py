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
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.chmod(tmp, 0o640)
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """The daemon's last state if it is running (fresh file, live pid); None otherwise."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() - state.get("updated_at", 0) > STALE_S:
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass  # alive, owned by the service user
    return state
