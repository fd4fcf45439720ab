"""What an output did not deliver as read, kept until IT acknowledges it (`scanner-agent output
ack`): lines dropped whole (no host reading, a full queue) and lines typed with characters left
out (a keyboard types only what its layout has keys for). The outbox holds every check-in; this
says that the HIS may lack some of them, or have them with characters missing, so the fault does
not clear with the next good line. A small file in the state directory: a restart (the counter
PC powering the Pi off at night) does not hide it either."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent import clock, jsonbound
from agent.cards.sanitize import one_line

#: a record is a few hundred bytes; the state directory is the service account's: bounded
MAX_BYTES = 4096
#: distinct characters kept of what was left out (enough to say which letters a layout lacks)
MAX_CHARS = 8
VERB = {"keyboard": "typed", "serial": "sent"}
#: the outputs that keep a record (paths.output_record)
KINDS = tuple(VERB)


@dataclass
class Lost:
    dropped: int = 0          # lines not delivered at all
    short: int = 0            # lines typed with characters left out
    first_at: float = 0.0     # the first of them since the last acknowledgement (epoch seconds)
    last_at: float = 0.0
    reason: str = ""          # why the newest dropped line was dropped
    left_out: str = ""        # the characters left out, each once, in the order met
    unreadable: str = ""      # the record on disk could not be read: why (its counts are lost)

    def _at(self, now: float) -> None:
        self.first_at = self.first_at or now
        self.last_at = now

    def add_dropped(self, reason: str, now: float, lines: int = 1) -> None:
        self.dropped += lines
        self.reason = one_line(reason, 120)
        self._at(now)

    def add_short(self, chars: str, now: float) -> bool:
        """Count a line typed without `chars`; True when one of them is new to the record."""
        self.short += 1
        self._at(now)
        new = "".join(c for c in dict.fromkeys(chars) if c not in self.left_out)
        self.left_out = (self.left_out + new)[:MAX_CHARS]
        return bool(new)

    def text(self, kind: str) -> str:
        """One line for status, health (at most 400 characters) and the log."""
        verb = VERB.get(kind, "delivered")
        parts = []
        if self.dropped:
            parts.append(f"{self.dropped} line(s) not {verb} (last: {self.reason})")
        if self.short:
            chars = ", ".join(f"{c!r} U+{ord(c):04X}" for c in self.left_out)
            parts.append(f"{self.short} line(s) {verb} without {chars} (no key for it on this keyboard "
                         f"layout; [output.serial] sends UTF-8)")
        if self.unreadable:
            parts.append(f"an earlier record of such lines could not be read ({self.unreadable})")
        since = f" since {clock.now_iso(self.first_at)[:16].replace('T', ' ')}" if self.first_at else ""
        head = f"{kind} output{since}: "
        tail = ": the HIS lacks those check-ins as read (the outbox has them); 'scanner-agent output ack' once seen to"
        return head + "; ".join(parts)[:400 - len(head) - len(tail)] + tail

    @classmethod
    def from_dict(cls, d: Any) -> "Lost":
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        out = cls()
        for name, kind in (("dropped", int), ("short", int), ("first_at", (int, float)), ("last_at", (int, float)),
                           ("reason", str), ("left_out", str), ("unreadable", str)):
            value = d.get(name, getattr(out, name))
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{name} is not a {kind}")
            setattr(out, name, value)
        out.reason, out.unreadable = one_line(out.reason, 120), one_line(out.unreadable, 120)
        out.left_out = "".join(c for c in out.left_out if c.isprintable())[:MAX_CHARS]
        out.dropped, out.short = max(out.dropped, 0), max(out.short, 0)
        return out


def load(path: Path) -> Lost | None:
    """The record at `path`, None when there is none. One that cannot be read is kept on disk (it
    is no proof of anything) and reads as a record whose details are lost, so the fault still shows."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Lost(unreadable=f"{path}: {exc.strerror or exc}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Lost(unreadable=f"{path} is not a regular file")
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as exc:
        return Lost(unreadable=f"{path}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    try:
        return Lost.from_dict(jsonbound.loads(data, max_bytes=MAX_BYTES, max_depth=2))
    except (UnicodeDecodeError, ValueError) as exc:
        return Lost(unreadable=f"{path}: {one_line(exc, 80)}")


def save(path: Path, lost: Lost) -> None:
    """Replace the record atomically (a reader never sees half of it); mode 0600. OSError when the
    state directory cannot take it (the record then lives in memory only)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(lost), f, ensure_ascii=True)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def clear(path: Path) -> None:
    """Remove the record (IT has acknowledged it); a missing one is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
