"""USB HID boot keyboard reports for text, US layout (what /dev/hidg0 takes).

A report is 8 bytes: modifiers, reserved, then up to six key codes. Each character is a key-down
report followed by an all-released report, so repeated letters are typed twice.
"""

from __future__ import annotations

SHIFT = 0x02
RELEASE = bytes(8)

_US: dict[str, tuple[int, int]] = {}
for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
    _US[ch] = (0, 0x04 + i)
    _US[ch.upper()] = (SHIFT, 0x04 + i)
for i, ch in enumerate("1234567890"):
    _US[ch] = (0, 0x1E + i)
for i, ch in enumerate("!@#$%^&*()"):
    _US[ch] = (SHIFT, 0x1E + i)
for plain, shifted, code in (("-", "_", 0x2D), ("=", "+", 0x2E), ("[", "{", 0x2F), ("]", "}", 0x30),
                             ("\\", "|", 0x31), (";", ":", 0x33), ("'", '"', 0x34), ("`", "~", 0x35),
                             (",", "<", 0x36), (".", ">", 0x37), ("/", "?", 0x38)):
    _US[plain], _US[shifted] = (0, code), (SHIFT, code)
_US[" "] = (0, 0x2C)
_US["\n"] = (0, 0x28)   # Enter
_US["\t"] = (0, 0x2B)   # Tab

LAYOUTS = {"us": _US}


def typeable(text: str, layout: str = "us") -> str:
    """The characters of `text` this layout cannot type ('' when all can)."""
    keys = LAYOUTS[layout]
    return "".join(sorted({c for c in text if c not in keys}))


def split_typeable(text: str, layout: str = "us") -> tuple[str, str]:
    """(what of `text` this layout can type, the characters it cannot: each once, in order)."""
    keys = LAYOUTS[layout]
    if all(c in keys for c in text):
        return text, ""
    return "".join(c for c in text if c in keys), "".join(dict.fromkeys(c for c in text if c not in keys))


def encode(text: str, layout: str = "us") -> list[bytes]:
    """Key-down and release reports for `text`; ValueError for a character the layout lacks."""
    keys = LAYOUTS[layout]
    reports = []
    for ch in text:
        if ch not in keys:
            raise ValueError(f"cannot type {ch!r} on a {layout.upper()} keyboard")
        mod, code = keys[ch]
        reports += [bytes([mod, 0, code, 0, 0, 0, 0, 0]), RELEASE]
    return reports


LEFT_ALT = 0x04
KEYPAD = {d: 0x59 + (int(d) - 1) if d != "0" else 0x62 for d in "0123456789"}


def encode_alt_numpad(text: str, layout: str = "us") -> list[bytes]:
    """Keypad emulation (Zebra "Emulate Keypad", Honeywell "Alt mode"): each character as Alt held
    while its Windows code (Alt+0nnn) is typed on the numeric keypad. Input methods such as Unikey
    or EVKey do not rewrite these, so a BHYT code arrives intact. Enter and Tab stay plain keys."""
    keys = LAYOUTS[layout]
    reports = []
    for ch in text:
        if ch in "\n\t":
            reports += [bytes([0, 0, keys[ch][1], 0, 0, 0, 0, 0]), RELEASE]
            continue
        if ch not in keys:
            raise ValueError(f"cannot type {ch!r} on a {layout.upper()} keyboard")
        reports.append(bytes([LEFT_ALT, 0, 0, 0, 0, 0, 0, 0]))
        for digit in f"0{ord(ch)}":
            reports += [bytes([LEFT_ALT, 0, KEYPAD[digit], 0, 0, 0, 0, 0]), bytes([LEFT_ALT, 0, 0, 0, 0, 0, 0, 0])]
        reports.append(RELEASE)
    return reports


def decode(reports: list[bytes], layout: str = "us") -> str:
    """What a host would see typed (for tests): the inverse of encode."""
    inverse = {v: k for k, v in LAYOUTS[layout].items()}
    keypad = {v: k for k, v in KEYPAD.items()}
    out, digits = [], None
    for r in reports:
        if r[0] & LEFT_ALT:                      # keypad emulation: collect the code while Alt is held
            digits = digits if digits is not None else ""
            if r[2]:
                digits += keypad[r[2]]
            continue
        if digits is not None:                   # Alt released: the character appears
            out.append(chr(int(digits)))
            digits = None
        if r[2]:
            out.append(inverse[(r[0] & SHIFT, r[2])])
    return "".join(out)
