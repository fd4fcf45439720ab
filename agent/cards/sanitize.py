"""Make untrusted QR text safe before anything (logs, terminals, the hospital) sees it.

A QR code is attacker-controlled input: names and addresses may carry terminal escape
sequences, bidi overrides that reorder what staff read, invisible marks, or be absurdly long.
"""

from __future__ import annotations

import re
import unicodedata

#: No QR code holds more than 7 089 characters (version 40, numeric); anything longer is not a scan.
MAX_PAYLOAD_CHARS = 8192
#: Longest name / address / free-text field we pass on.
MAX_FIELD_CHARS = 256

# ECMA-48 sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC x,
# and the 8-bit CSI (U+009B).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
)
# Control (Cc), format (Cf: bidi overrides, zero-width marks, BOM), surrogate, private-use,
# unassigned: none belongs in a name, date or number.
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_SPACE_CATEGORIES = {"Zs", "Zl", "Zp"}


def clean_text(text: str) -> str:
    """Remove escape sequences and invisible or control characters; NFC-normalise; keep newlines out.

    Whitespace of any kind becomes a plain space, runs of spaces collapse, ends are trimmed.
    """
    text = _ESCAPES.sub("", text)
    out = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        if ch in "\t\r\n" or cat in _SPACE_CATEGORIES:
            out.append(" ")
        elif cat not in _DROP_CATEGORIES:
            out.append(ch)
    return " ".join("".join(out).split())


def one_line(value: object, limit: int = 300) -> str:
    """Untrusted text from outside (a broker's error, a verdict, a fault from another station),
    cleaned like card fields and capped, for one line of a log or a terminal."""
    return clean_text(str(value))[:limit]


def clean_payload(text: str) -> str:
    """Clean a whole payload but keep its separators: `|` splits fields, so it must survive."""
    return "|".join(clean_text(part) for part in text.split("|"))


def to_text(data: str | bytes) -> tuple[str, bool]:
    """Decode QR bytes as UTF-8. Returns (text, ok); undecodable bytes become U+FFFD and ok=False."""
    if isinstance(data, str):
        # A str may still hold lone surrogates (e.g. from surrogateescape); treat them as bad bytes.
        try:
            data.encode("utf-8")
            return data, True
        except UnicodeEncodeError:
            return data.encode("utf-8", "replace").decode("utf-8", "replace"), False
    try:
        return bytes(data).decode("utf-8"), True
    except UnicodeDecodeError:
        return bytes(data).decode("utf-8", "replace"), False


def cap(text: str, limit: int = MAX_FIELD_CHARS) -> tuple[str, bool]:
    """Truncate to `limit` characters; returns (text, was_truncated)."""
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def mask_name(name: str | None) -> str:
    """`Nguyễn Văn An` -> `Ng*** V** A*`: enough for staff to match a log line, not to identify."""
    if not name:
        return "-"
    parts = []
    for word in name.split():
        # Long words show two letters and a fixed three stars, so the length is not revealed.
        parts.append(word[:2] + "***" if len(word) > 3 else word[:1] + "*" * max(1, len(word) - 1))
    return " ".join(parts)
