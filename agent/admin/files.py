"""Files the IT commands write (exports with patients' data, snapshots): created fresh, mode 0600.

A new file is written beside the target and renamed over it, so an existing file's mode, owner
or symlink is never reused or followed; nothing is written into the state directory (the outbox
lives there); any refusal is one clear line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable, IO


class RefusedPath(Exception):
    """The target cannot or must not be written; the message says why."""


def check_target(path: Path, state_dir: Path | None) -> Path:
    """The absolute target, or RefusedPath."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise RefusedPath(f"{path}: give a file name, not a folder")
    parent = path.parent.resolve()
    if not parent.is_dir():
        raise RefusedPath(f"{path}: the folder {path.parent} does not exist")
    target = parent / path.name
    if state_dir is not None:
        state = Path(state_dir).resolve()
        if target == state or state in target.parents:
            raise RefusedPath(f"{path}: refusing to write into the station's state directory {state_dir}")
    try:
        st = target.lstat()
    except FileNotFoundError:
        return target
    if stat.S_ISDIR(st.st_mode):
        raise RefusedPath(f"{path} is a folder: give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise RefusedPath(f"{path} exists and is not a regular file (a link or a device): choose another name")
    return target


def _sync_dir(folder: Path) -> None:
    """fsync a folder, so a file renamed into it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, write: Callable[[IO[bytes]], None], state_dir: Path | None) -> Path:
    """Create `path` afresh, mode 0600, filled by `write(file)`; replaces a regular file atomically."""
    target = check_target(path, state_dir)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise RefusedPath(f"{path}: cannot create a file in {target.parent}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _sync_dir(target.parent)   # the new name on disk too: `queue remove` deletes only after this
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target
