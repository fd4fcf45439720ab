"""Care of the outbox's files: mode 0600, the -wal/-shm companions, owners under sudo, links
refused, and a proven-damaged file moved aside. Paths come from agent.paths."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Callable

from agent import paths
from agent.outbox.errors import OutboxError


def create_private(path: Path) -> None:
    """Create the (missing) database file 0600 ourselves: SQLite would honour the umask (often 0644)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))


def delete_files(path: Path | str) -> None:
    """Remove a database and its -wal/-shm files (those that exist)."""
    for p in (Path(path), *paths.sidecars(Path(path))):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _on_regular_file(path: Path, act: Callable[[str, os.stat_result], None]) -> None:
    """Run `act(fd_path, stat)` on `path` when it is a regular file with one name (no link, FIFO,
    device or hard link to a file elsewhere); otherwise nothing. The file is pinned with an O_PATH
    descriptor opened without following links, and acted on through /proc/self/fd (which names
    that very file): an O_PATH descriptor, unlike a normal one, does not drop SQLite's POSIX locks
    on the file when it is closed."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            act(f"/proc/self/fd/{fd}", st)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """Mode 0600 on the database and its -wal/-shm (regular files only, never through a link)."""
    for p in (path, *paths.sidecars(path)):
        _on_regular_file(p, lambda at, st: os.chmod(at, 0o600))


def refuse_links(path: Path) -> None:
    """The outbox and its -wal/-shm must be regular files with one name: a link there may point
    anywhere (the service account could have planted it), and SQLite or a root command would act
    on its target. A hard link is one too: the other name may be any file of the same filesystem
    (only fs.protected_hardlinks=1 keeps the service account from linking a file it does not own)."""
    for p in (path, *paths.sidecars(path)):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise OutboxError(f"{p} is {kind}: refusing to open the outbox through it (nothing was "
                              f"changed); remove it if you did not put it there ('sudo rm {p}')")
        if st.st_nlink > 1:
            raise OutboxError(f"{p} is a hard link ({st.st_nlink} names for one file): refusing to open the "
                              f"outbox through it (nothing was changed); list the other names with 'sudo find / "
                              f"-xdev -samefile {p}': remove a copy somebody made (ln, cp -l), or, if one is not "
                              f"the station's (a system file), remove this name ('sudo rm {p}')")


def match_owner(path: Path) -> None:
    """Run by root (sudo), SQLite may create -wal/-shm owned by root, which the service user then
    cannot open: give them the outbox's owner. A link or anything but a regular file is never
    touched (the service account may have planted it), and the owner is changed on the file pinned
    by a descriptor opened without following links."""
    if os.geteuid() != 0:
        return
    try:
        owner = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(owner.st_mode):
        return

    def give(at: str, st: os.stat_result) -> None:
        if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(at, owner.st_uid, owner.st_gid)
    for p in paths.sidecars(path):
        _on_regular_file(p, give)


def move_aside(path: Path) -> Path:
    """Move a proven-damaged database and its -wal/-shm to a fresh `{path}.corrupt-{time}` name
    (kept for salvage and IT's import); returns that name."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    aside, n = paths.moved_aside(path, stamp), 1
    while aside.exists():
        n += 1
        aside = paths.moved_aside(path, f"{stamp}-{n}")
    for src, dst in zip((path, *paths.sidecars(path)), (aside, *paths.sidecars(aside))):
        if src.exists():
            os.replace(src, dst)
    return aside
