"""Where the station keeps its files: the one place every path is built.

    /etc/scanner-agent/config.toml   the installed config (read when no -c CONFIG is given)
    /etc/systemd/system/scanner-agent.service   the installed unit (systemd/install.sh; the
                                     Debian package's: /lib/systemd/system/)
    {state_dir}/outbox.db            the check-in outbox (agent.outbox), 0600
    {state_dir}/outbox.db-wal, -shm  SQLite's companions of the outbox in WAL mode
    {state_dir}/outbox.db.corrupt-*  an outbox proven damaged, kept until IT imports it
    {state_dir}/output-{kind}.unacknowledged.json   lines an output dropped or typed short, until
                                     `scanner-agent output ack`
    {runtime}/status.json            the running daemon's state, for `scanner-agent status`
    {runtime}/control.sock           the running daemon's control socket (snapshots)

{runtime} is systemd's RuntimeDirectory= (RUNTIME_DIRECTORY), else {state_dir}/run.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the installed config: what every command reads when no -c CONFIG is given
CONFIG = Path("/etc/scanner-agent/config.toml")
#: the installed service unit (systemd/install.sh copies it here)
UNIT = Path("/etc/systemd/system/scanner-agent.service")
#: where systemd looks for a system unit, first to last (systemd.unit(5)): the Debian package puts
#: it in /lib/systemd/system (/usr/lib/systemd/system on a merged /usr), install.sh in /etc
UNIT_DIRS = tuple(Path(d) for d in (
    "/etc/systemd/system.control", "/run/systemd/system.control", "/run/systemd/transient",
    "/run/systemd/generator.early", "/etc/systemd/system", "/etc/systemd/system.attached", "/run/systemd/system",
    "/run/systemd/system.attached", "/run/systemd/generator", "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/generator.late"))
#: dpkg's list of the package's files: there when the station was installed from the .deb
PACKAGE_LIST = Path("/var/lib/dpkg/info/scanner-agent.list")
#: The demo's bundled camera frames (replayed when no camera path is configured).
DEMO_FRAMES = Path(__file__).parent / "samples" / "frames"
OUTBOX = "outbox.db"
#: what a proven-damaged outbox file is renamed to: {outbox}{ASIDE}{timestamp}
ASIDE = ".corrupt-"


def outbox(state_dir: str | Path) -> Path:
    return Path(state_dir) / OUTBOX


def sidecars(db: Path) -> tuple[Path, Path]:
    """(-wal, -shm): the files SQLite keeps beside a database in WAL mode, which move, change owner
    and get deleted with it."""
    return Path(f"{db}-wal"), Path(f"{db}-shm")


def moved_aside(db: Path, stamp: str) -> Path:
    """The name a proven-damaged database `db` is renamed to: {db}{ASIDE}{stamp}."""
    return db.with_name(f"{db.name}{ASIDE}{stamp}")


def damaged_outboxes(outbox_path: str | Path) -> list[Path]:
    """Files of the outbox at `outbox_path` moved aside as damaged and kept (their -wal/-shm
    companions not listed)."""
    p = Path(outbox_path)
    return sorted(f for f in p.parent.glob(f"{p.name}{ASIDE}*") if not f.name.endswith(("-wal", "-shm")))


def output_record(state_dir: str | Path, kind: str) -> Path:
    """What the `kind` output (keyboard, serial) did not deliver as read since IT last acknowledged
    it (agent.outputs.record)."""
    return Path(state_dir) / f"output-{kind}.unacknowledged.json"


def runtime_dir(state_dir: str | Path) -> Path:
    """systemd's RuntimeDirectory= (RUNTIME_DIRECTORY), else `{state_dir}/run`."""
    env = os.environ.get("RUNTIME_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path(state_dir) / "run"


def status_file(state_dir: str | Path) -> Path:
    return runtime_dir(state_dir) / "status.json"


def control_socket(state_dir: str | Path) -> Path:
    return runtime_dir(state_dir) / "control.sock"


def prompt(voice_dir: str | Path, name: str) -> Path:
    """A voice prompt's file ([feedback] voice_dir; agent/feedback/prompts.py makes them)."""
    return Path(voice_dir) / f"{name}.wav"
