"""Spoken prompts in Vietnamese: what the LEDs cannot say to an elderly patient or one new to
VssID ("move the phone closer", "tilt it against the glare").

A prompt is a WAV file in `[feedback] voice_dir`, named by signal and reason
(`try_again-glare.wav`, `checkin.wav`): the installer makes a default set with espeak-ng's
Vietnamese voice (`python -m agent.feedback.prompts DIR`), and a hospital may put its own
recordings in their place. Only the signals meant for the patient speak; the staff's (ready,
fault, broker down, hospital accepted) stay on the LEDs. A missing device or file is a warning
(status, doctor), never a fault on the LEDs: the LEDs still say everything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent import paths
from agent.feedback.audio import AplayPlayer, Player
from agent.feedback.patterns import Signal

log = logging.getLogger(__name__)

#: Every prompt, file name (without .wav) -> what it says. One short sentence each.
PROMPTS: dict[str, str] = {
    "checkin": "Đã nhận, mời quý khách chờ gọi tên",
    "checkin_priority": "Đã nhận, quý khách thuộc diện ưu tiên",
    "checkin_other_facility": "Đã nhận, mời quý khách gặp nhân viên",
    "checkin_warning": "Thẻ đã hết hạn, mời quý khách gặp nhân viên",
    "checkin_warning-not_yet_valid": "Thẻ chưa đến hạn sử dụng, mời quý khách gặp nhân viên",
    "chip_wait": "Mời quý khách đặt thẻ căn cước lên đầu đọc",
    "checkin_chip_mismatch": "Đã nhận, mời quý khách gặp nhân viên để kiểm tra thẻ",
    "already_read": "Thẻ đã được nhận rồi, mời quý khách chờ gọi tên",
    "rejected": "Mã này không phải thẻ, mời quý khách mở mã thẻ bảo hiểm y tế hoặc căn cước",
    "try_again-closer": "Mời quý khách đưa điện thoại lại gần",
    "try_again-glare": "Xin nghiêng điện thoại để tránh chói",
    "try_again-dim": "Xin tăng độ sáng màn hình",
    "try_again-still": "Xin giữ yên điện thoại",
    "try_again-unknown": "Chưa đọc được mã, mời quý khách thử lại",
    "verdict_rejected": "Thẻ chưa được chấp nhận, mời quý khách gặp nhân viên",
}

#: Signals the patient hears; each is one stored check-in or one answer, so never rate-limited.
ONCE_EACH = {Signal.CHECKIN, Signal.CHECKIN_PRIORITY, Signal.CHECKIN_OTHER_FACILITY, Signal.CHECKIN_WARNING,
             Signal.VERDICT_REJECTED, Signal.CHIP_WAIT, Signal.CHECKIN_CHIP_MISMATCH}


def prompt_name(signal: Signal, reason: str | None = None) -> str | None:
    """The prompt for a signal (and its reason), or None when that signal stays silent."""
    if reason and f"{signal.value}-{reason}" in PROMPTS:
        return f"{signal.value}-{reason}"
    if signal == Signal.TRY_AGAIN:
        return "try_again-unknown"
    return signal.value if signal.value in PROMPTS else None


class Voice:
    """Chooses the prompt, applies the rate limits, hands the file to the player. `say` returns
    at once (the player interrupts the prompt it is playing, like the LED patterns)."""

    def __init__(self, player: Player, folder: Path | str, *, volume: int = 80, repeat_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self.player, self.folder, self.volume, self.repeat_s = player, Path(folder), volume, repeat_s
        self.clock = clock
        self._lock = threading.Lock()   # the main loop and the MQTT thread (a verdict) both speak
        self._last: dict[str, float] = {}
        self.missing: set[str] = set()
        #: what was spoken: (clock time, prompt name), for tests and status
        self.spoken: list[tuple[float, str]] = []

    def say(self, signal: Signal, reason: str | None = None, *, present: bool = True) -> str | None:
        """Speak the prompt of `signal` if there is one, somebody is at the counter (`present`),
        and the same prompt was not spoken within `repeat_s`; returns the prompt spoken."""
        name = prompt_name(signal, reason)
        if name is None or not present:
            return None
        with self._lock:
            return self._say(signal, name)

    def _say(self, signal: Signal, name: str) -> str | None:
        now = self.clock()
        if signal not in ONCE_EACH and now - self._last.get(name, -1e9) < self.repeat_s:
            return None
        path = self.file_of(name)
        if path is None:
            if name not in self.missing:
                log.warning("voice: no prompt file %s.wav in %s", name, self.folder)
            self.missing.add(name)
            return None
        self._last[name] = now
        self.spoken.append((now, name))
        del self.spoken[:-200]
        try:
            self.player.play(path, self.volume)
        except Exception as exc:  # noqa: BLE001 - a voice failure never stops a check-in
            self.player.warning = f"voice: {path}: {type(exc).__name__}: {exc or 'no details'}"
        return name

    def file_of(self, name: str) -> Path | None:
        """The prompt's file, else the signal's own (a reason without a recording of its own)."""
        for candidate in (name, name.split("-")[0]):
            path = paths.prompt(self.folder, candidate)
            if path.is_file():
                return path
        return None

    @property
    def warning(self) -> str | None:
        """What the staff's IT should know (no device, missing files), or None."""
        parts = []
        if w := self.player.warning:
            parts.append(w)
        if self.missing:
            parts.append(f"no prompt file for {', '.join(sorted(self.missing))} in {self.folder}")
        return "; ".join(parts) or None

    def close(self) -> None:
        self.player.close()


def make_voice(cfg) -> Voice | None:
    """The configured voice ([feedback] voice), or None when it is off."""
    if not cfg.voice:
        return None
    return Voice(AplayPlayer(cfg.voice_device), cfg.voice_dir, volume=cfg.voice_volume,
                 repeat_s=cfg.voice_repeat_s)
