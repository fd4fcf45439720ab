"""Play a WAV file through ALSA with `aplay`, a newer prompt cutting the one playing short.

`aplay` (alsa-utils, on every Raspberry Pi OS image) rather than a Python audio library: no
extra wheel, and any ALSA device works (3.5 mm jack, USB speaker, I2S amplifier). The volume is
applied to the samples before they reach aplay, so it never touches the system mixer.
"""

from __future__ import annotations

import io
import logging
import shutil
import struct
import subprocess
import threading
import wave
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: A prompt file larger than this is refused (a short sentence is tens of kilobytes).
MAX_WAV_BYTES = 4 * 1024 * 1024


class Player(Protocol):
    #: the last thing that went wrong playing (no aplay, no device), for status and doctor
    warning: str | None

    def play(self, path: Path, volume: int) -> None: ...
    def close(self) -> None: ...


class BadWav(ValueError):
    """A prompt file that is not a WAV `aplay` can play; the message names the file and why."""


#: what a prompt's header may say (anything else is a damaged header, not a recording)
CHANNELS, SAMPLE_BYTES, RATES = range(1, 9), range(1, 5), range(8_000, 192_001)


def _why(exc: BaseException) -> str:
    """What the wave module's exception means: it says little (a bare RuntimeError when a chunk
    runs past the end, struct.error for a cut header field)."""
    if isinstance(exc, RuntimeError):
        return "a chunk runs past the end of the file"
    if isinstance(exc, (EOFError, struct.error)):
        return "the file ends inside a header"
    return str(exc) or type(exc).__name__


def read_wav(path: Path) -> tuple[bytes, Any, bytes]:
    """The file, its header (wave's params) and its whole sample frames, or BadWav naming the file and what is
    wrong (too large, a damaged or truncated header, no sound). A prompt is anybody's file
    (a hospital's recording): read bounded, and every failure of the parser is one reason."""
    with open(path, "rb") as f:
        data = f.read(MAX_WAV_BYTES + 1)
    if len(data) > MAX_WAV_BYTES:
        raise BadWav(f"{path}: larger than {MAX_WAV_BYTES} bytes")
    try:
        with wave.open(io.BytesIO(data)) as w:
            params = w.getparams()
            frames = w.readframes(params.nframes)
    except Exception as exc:  # noqa: BLE001 - the wave module's failures on a bad header are not all documented
        raise BadWav(f"{path}: not a WAV file aplay can play ({_why(exc)})") from None
    if params.nchannels not in CHANNELS or params.sampwidth not in SAMPLE_BYTES or params.framerate not in RATES:
        raise BadWav(f"{path}: damaged header ({params.nchannels} channels, {params.sampwidth} bytes a sample, "
                     f"{params.framerate} Hz)")
    size = params.nchannels * params.sampwidth
    frames = frames[:len(frames) // size * size]
    if not frames:
        raise BadWav(f"{path}: no sound in it (no sample frames)")
    return data, params, frames


def scaled_wav(path: Path, volume: int) -> bytes:
    """The WAV file with its samples scaled to `volume` percent (16-bit PCM; other sample widths
    are played as they are). BadWav (a ValueError) for a file that is not a playable WAV or too
    large, OSError for one that cannot be read."""
    data, params, frames = read_wav(path)
    if params.sampwidth != 2 or volume >= 100:
        return data
    import numpy as np   # here: the installer makes the prompts before the station's dependencies

    samples = (np.frombuffer(frames, "<i2").astype(np.float32) * (max(volume, 0) / 100)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setparams(params._replace(nframes=len(samples) // params.nchannels))
        w.writeframes(samples.tobytes())
    return out.getvalue()


class AplayPlayer:
    """One `aplay` process at a time, fed the (scaled) file on its standard input."""

    def __init__(self, device: str = "default", command: str = "aplay"):
        self.device, self.command = device, command
        self.warning: str | None = None
        self._proc: subprocess.Popen | None = None
        self._feeder: threading.Thread | None = None
        self._lock = threading.Lock()

    def play(self, path: Path, volume: int) -> None:
        try:
            data = scaled_wav(path, volume)
        except BadWav as exc:
            self.warning = f"voice: {exc}"
            return
        except OSError as exc:
            self.warning = f"voice: {path}: {exc.strerror or exc}"
            return
        exe = shutil.which(self.command)
        if exe is None:
            self.warning = "voice: aplay not found (sudo apt install alsa-utils)"
            return
        with self._lock:
            self._stop_current()
            try:
                proc = subprocess.Popen([exe, "-q", "-D", self.device, "-"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                self.warning = f"voice: cannot start aplay: {exc.strerror or exc}"
                return
            self._proc = proc
            self._feeder = threading.Thread(target=self._feed, args=(proc, data), name="voice", daemon=True)
            self._feeder.start()

    def _feed(self, proc: subprocess.Popen, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass   # interrupted by a newer prompt, or aplay could not open the device (below)
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        rc = proc.wait()
        if rc > 0:   # < 0: killed by us for a newer prompt
            line = err.splitlines()[-1] if err else f"exit status {rc}"
            self.warning = f"voice: aplay -D {self.device}: {line}"[:300]
            log.warning("%s", self.warning)
        elif rc == 0:
            self.warning = None

    def _stop_current(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the prompt playing to end (tests, `feedback test`); its exit status, None
        when it still plays or none was started."""
        proc, feeder = self._proc, self._feeder
        if proc is None or feeder is None:
            return None
        feeder.join(timeout)
        return proc.returncode if not feeder.is_alive() else None

    def close(self) -> None:
        with self._lock:
            self._stop_current()


def probe(device: str, command: str = "aplay") -> str | None:
    """Can `device` play? Plays a tenth of a second of silence; None when it can, else why not."""
    exe = shutil.which(command)
    if exe is None:
        return "aplay not found (sudo apt install alsa-utils)"
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(b"\0\0" * 2205)
    try:
        run = subprocess.run([exe, "-q", "-D", device, "-"], input=out.getvalue(), capture_output=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"aplay -D {device}: {exc}"
    if run.returncode != 0:
        err = run.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"aplay -D {device}: {err[-1] if err else f'exit status {run.returncode}'}"
    return None
