"""A small tmpfs of a test's own (a disk that fills, a state dir with no inode left). Needs root,
as CI runs; anywhere else the test fails saying so rather than being skipped."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(mount: Path, options: str, why: str) -> Iterator[Path]:
    """Mount a tmpfs with `options` on `mount` (made here) for the block; unmounted after."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"this test mounts {why} and needs root: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
