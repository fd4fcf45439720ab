"""Make the default voice prompts with espeak-ng's Vietnamese voice: one WAV per entry of
agent.feedback.voice.PROMPTS. The installer runs it (`python -m agent.feedback.prompts DIR`);
files already there are kept, so a hospital's own recordings are never overwritten."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from agent import paths
from agent.feedback.voice import PROMPTS

VOICE = "vi"
WORDS_PER_MINUTE = 140    # a little slower than espeak-ng's 175: for elderly patients


def generate(folder: Path | str, *, force: bool = False, espeak: str = "espeak-ng") -> list[str]:
    """Write every missing prompt (all of them with `force`) into `folder`; returns the names
    written. RuntimeError when espeak-ng is missing or fails."""
    exe = shutil.which(espeak)
    if exe is None:
        raise RuntimeError("espeak-ng not found (sudo apt install espeak-ng)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in PROMPTS.items():
        target = paths.prompt(folder, name)
        if target.exists() and not force:
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".wav", dir=folder)
        os.close(fd)
        try:
            run = subprocess.run([exe, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", tmp, text],
                                 capture_output=True, timeout=60)
            if run.returncode != 0:
                raise RuntimeError(f"espeak-ng failed for {name}: "
                                   f"{run.stderr.decode('utf-8', 'replace').strip()[:200]}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.feedback.prompts", description=__doc__)
    p.add_argument("folder", help="where the prompts go (the config's [feedback] voice_dir)")
    p.add_argument("--force", action="store_true", help="replace existing files too")
    p.add_argument("--check", action="store_true", help="make nothing; exit 1 when a prompt is missing")
    args = p.parse_args(argv)
    if args.check:
        missing = [n for n in PROMPTS if not paths.prompt(args.folder, n).is_file()]
        print(f"prompts: {len(missing)} missing in {args.folder}" if missing else "prompts: all there")
        return 1 if missing else 0
    try:
        written = generate(args.folder, force=args.force)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"prompts: {exc}", file=sys.stderr)
        return 1
    kept = len(PROMPTS) - len(written)
    print(f"prompts: {len(written)} made in {args.folder}" + (f", {kept} kept" if kept else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
