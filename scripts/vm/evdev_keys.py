"""Read what a USB keyboard types, from its evdev device or a raw recording of it (`cat
/dev/input/eventN > FILE`: what scripts/test-vm records in its VM and decodes on the host), as the
counter PC would see it. Python's standard library only.

Each line typed (up to an Enter) is written to OUT as one JSON string. Keypad emulation is read as
Windows does: the keypad digits typed while Alt is held make one character, Alt+0nnn from code
page 1252 (ASCII is the same there), when Alt is released. A key the station must never send
(Escape, Backspace, Delete, a Ctrl chord...) is written as {"control": CODE}; autorepeats are
counted, not typed (the kernel's, when a release comes late under emulation). Events the kernel
dropped because this reader fell behind (SYN_DROPPED) are written as {"dropped": N}: then the
reader (or recorder), not the station, lost keys, and the test says so.

    python3 evdev_keys.py /dev/input/eventN|FILE OUT
"""

from __future__ import annotations

import json
import struct
import sys

EVENT = struct.Struct("llHHi")       # struct input_event: timeval, type, code, value
EV_SYN, EV_KEY, SYN_DROPPED = 0, 1, 3
PLAIN = {2 + i: c for i, c in enumerate("1234567890")}
PLAIN.update({12: "-", 13: "=", 26: "[", 27: "]", 39: ";", 40: "'", 41: "`", 43: "\\", 51: ",", 52: ".",
              53: "/", 57: " "})
PLAIN.update({16 + i: c for i, c in enumerate("qwertyuiop")})
PLAIN.update({30 + i: c for i, c in enumerate("asdfghjkl")})
PLAIN.update({44 + i: c for i, c in enumerate("zxcvbnm")})
SHIFTED = dict(zip("1234567890-=[];'`\\,./", "!@#$%^&*()_+{}:\"~|<>?"))
SHIFT_KEYS = {42, 54}
ALT_KEYS = {56, 100}
KEYPAD = {82: "0", 79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9"}
ENTER, TAB, KP_ENTER = 28, 15, 96


def char(code: int, shift: bool) -> str | None:
    """The character a US layout types for a key, or None for a key that is not a character."""
    c = PLAIN.get(code)
    if c is None:
        return None
    if shift:
        return c.upper() if c.isalpha() else SHIFTED.get(c, c)
    return c


def main(device: str, out_path: str) -> None:
    shift: set[int] = set()
    alt: set[int] = set()
    digits: str | None = None
    line: list[str] = []
    repeats = dropped = 0
    with open(device, "rb", buffering=0) as dev, open(out_path, "a", encoding="utf-8") as out:
        def emit(item: object) -> None:
            out.write(json.dumps(item) + "\n")
            out.flush()

        while data := dev.read(EVENT.size * 256):          # what is there, up to 256 events at once
            for _, _, etype, code, value in EVENT.iter_unpack(data):
                if etype == EV_SYN and code == SYN_DROPPED:
                    dropped += 1
                    emit({"dropped": dropped})
                    continue
                if etype != EV_KEY:
                    continue
                if value == 2:
                    repeats += 1
                    emit({"repeats": repeats})
                    continue
                if code in SHIFT_KEYS:
                    (shift.add if value else shift.discard)(code)
                elif code in ALT_KEYS:
                    (alt.add if value else alt.discard)(code)
                    if value:
                        digits = digits or ""
                    elif not alt and digits is not None:
                        if digits:
                            line.append(bytes([int(digits) % 256]).decode("cp1252", "replace"))
                        digits = None
                elif value != 1:
                    continue
                elif alt and code in KEYPAD:
                    digits = (digits or "") + KEYPAD[code]
                elif code in (ENTER, KP_ENTER) and not alt:
                    emit("".join(line))
                    line = []
                elif code == TAB and not alt:
                    line.append("\t")
                elif (c := char(code, bool(shift))) is not None and not alt:
                    line.append(c)
                else:
                    emit({"control": code})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
