"""Check-in lookalikes found by their JSON text anywhere in a file (an outbox whose schema page is
gone), bounded as every JSON from outside is (agent/jsonbound.py, `queue import`'s lines): an
object at most `max_bytes` long and `max_depth` deep, refused before it is parsed; the file read
through a memory map, in time linear in its size.

Parsing again from every `{"schema":` was quadratic on nested input (76 s for 4 MB), and Python's
recursive parser ended in a RecursionError at 1,000 levels. Here one pass of a lexer (every token
but brackets matched by one regular expression, so Python runs once per bracket) follows the
marked objects still open; one is parsed only when its bracket closes within the bounds. Objects
that overlap are nested (one that starts inside another, outside its strings, is a value in it),
so at most `max_depth` are open at any byte: the pass is linear.
"""

from __future__ import annotations

import json
import mmap
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

#: how an outbox payload begins (json.dumps of the envelope: its first key, no space before the colon)
MARKER_TEXT = b'{"schema":'
MARKER = re.compile(re.escape(MARKER_TEXT))
#: JSON's tokens other than brackets, each matched one way only (a single whitespace character, a
#: string's characters one by one, a number not followed by a digit), so that a failed match
#: backtracks in linear time. Not possessive quantifiers: Python 3.11.2 (Raspberry Pi OS Bookworm)
#: matches them wrongly inside a repetition (a CPython bug fixed in a later 3.11 release): there the
#: scan missed every record that held another (seen under scripts/test-arm64, Debian's 3.11.2)
_TOKEN = (rb'[ \t\n\r]|[,:]|"(?:[^"\\\x00-\x1f]|\\.)*"'
          rb'|-?[0-9]+(?![0-9])(?:\.[0-9]+(?![0-9]))?(?:[eE][+-]?[0-9]+(?![0-9]))?|true|false|null|NaN|-?Infinity')
#: JSON's tokens other than brackets, in a run
_FLAT = re.compile(rb"(?:%s)*" % _TOKEN)
#: the same, and arrays and unmarked objects of such tokens (one level more: used where the bound
#: leaves room for it), so that Python runs about twice per check-in, not once per bracket
_FLAT_GROUPS = re.compile(rb'(?:%s|\[(?:%s)*\]|\{(?!"schema":)(?:%s)*\})*' % (_TOKEN, _TOKEN, _TOKEN))
_BRACKETS = b"[]{}"
_RELEASE_EVERY = 16 << 20      # pages of a memory map behind the scan are given back this often


@dataclass
class Found:
    start: int                      # byte offset of the object's `{`
    value: dict[str, Any] | None    # the object, parsed (None: refused)
    refused: str | None = None      # why it was not parsed: TOO_LONG or TOO_DEEP


TOO_LONG, TOO_DEEP = "too long", "too deep"


def scan(buf: bytes | mmap.mmap, *, max_bytes: int, max_depth: int,
         late: Callable[[], bool] = lambda: False) -> Iterator[Found]:
    """Every object in `buf` that begins with MARKER: parsed when it is JSON within the bounds,
    refused (said why) beyond them, passed over when it is not JSON (a page cut it). Objects inside
    one that parsed are not given again. Stops, having given what it found, once late() is true."""
    decoder = json.JSONDecoder()
    flat, groups, marker = _FLAT.match, _FLAT_GROUPS.match, MARKER.match
    n, pos, released = len(buf), 0, 0
    release = isinstance(buf, mmap.mmap)
    while True:
        start, released = _next_marker(buf, pos, n, released)
        if start is None or late():
            return
        x = start
        depth, steps = 0, 0
        marked: list[tuple[int, int]] = []    # (depth, offset) of the marked objects open, outermost first
        parsed: list[Found] = []              # objects parsed inside ones still open
        while True:
            c = buf[x]
            if c == 0x7B or c == 0x5B:
                depth += 1
                if c == 0x7B and marker(buf, x):
                    marked.append((depth, x))
                if depth - marked[0][0] >= max_depth:
                    yield Found(marked.pop(0)[1], None, TOO_DEEP)
            else:
                if marked and marked[-1][0] == depth:
                    begin = marked.pop()[1]
                    if (value := _parse(decoder, buf, begin, x + 1)) is not None:
                        # the objects inside this one are part of it
                        parsed = [f for f in parsed if f.start < begin] + [Found(begin, value)]
                depth -= 1
            x = (groups if marked and depth - marked[0][0] + 1 < max_depth else flat)(buf, x + 1).end()
            while marked and x - marked[0][1] > max_bytes:
                yield Found(marked.pop(0)[1], None, TOO_LONG)
            if not marked or x >= n or buf[x] not in _BRACKETS:
                break        # every marked object closed or refused, or the text stops being JSON
            steps += 1
            if steps % 4096 == 0:
                if late():
                    break
                if release and marked[0][1] - released > _RELEASE_EVERY:
                    released = _release(buf, released, marked[0][1])
        yield from parsed
        if release and x - released > _RELEASE_EVERY:
            released = _release(buf, released, x - 16)
        # a string that took in a marker's `{` ends on its quote, and the lexer stops on the bare
        # key after it: that marker (only the last of a run can be one) is scanned on its own
        pos = x - 2 if x - 2 > start and marker(buf, x - 2) else max(x, start + 1)


def _next_marker(buf: bytes | mmap.mmap, pos: int, n: int, released: int) -> tuple[int | None, int]:
    """Where the next MARKER at or after `pos` begins (None: nowhere), searched a window at a time
    so that the pages of a memory map already searched are given back as it goes; and the new mark
    of what was given back."""
    while pos < n:
        end = min(n, pos + _RELEASE_EVERY)
        if (m := MARKER.search(buf, pos, end)) is not None:
            return m.start(), released
        if end == n:
            break
        pos = end - len(MARKER_TEXT) + 1      # one that crosses the window's end
        if isinstance(buf, mmap.mmap):
            released = _release(buf, released, pos)
    return None, released


def _parse(decoder: json.JSONDecoder, buf: bytes | mmap.mmap, begin: int, end: int) -> dict[str, Any] | None:
    """The object at buf[begin:end] (brackets balanced, nesting within the bound), or None when it is
    not JSON. Undecodable bytes read as U+FFFD, as a damaged page would be read anyway."""
    text = bytes(buf[begin:end]).decode("utf-8", "replace")
    try:
        value, used = decoder.raw_decode(text)
    except ValueError:
        return None
    return value if used == len(text) and isinstance(value, dict) else None


def _release(buf: mmap.mmap, since: int, upto: int) -> int:
    """Let the kernel drop the mapped pages before `upto` from this process (they stay in the page
    cache): resident memory stays at a few megabytes, however large the file. Returns the new mark."""
    upto -= upto % mmap.PAGESIZE
    try:
        buf.madvise(mmap.MADV_DONTNEED, since, upto - since)
    except (OSError, ValueError, AttributeError):    # not offered (a seccomp filter, an old kernel)
        pass
    return upto
