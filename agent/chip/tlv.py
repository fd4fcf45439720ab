"""BER-TLV (ISO/IEC 8825-1, as ICAO 9303-10 uses it) parsed with bounds checked before anything
is allocated: a length is checked against the bytes that remain, nesting has a maximum depth and a
parse a maximum number of items. Every child lies strictly inside its parent, so a hostile file
cannot make a loop; it gets a TlvError with the offset where it went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.chip.transport import ChipError

MAX_DEPTH = 12
MAX_ITEMS = 4096


class TlvError(ChipError):
    """Malformed or over-limit TLV."""


@dataclass
class Node:
    """One TLV: `tag` as an int of its tag bytes (0x5F1F), offsets into the parsed buffer."""

    tag: int
    constructed: bool
    buf: bytes = field(repr=False)
    start: int      # first tag byte
    vstart: int     # first value byte
    end: int        # one past the last value byte
    children: list[Node] = field(default_factory=list)

    @property
    def value(self) -> bytes:
        return self.buf[self.vstart:self.end]

    @property
    def raw(self) -> bytes:
        """The whole encoding (tag, length and value): what a signature covers."""
        return self.buf[self.start:self.end]

    def find(self, tag: int) -> Node | None:
        """The first direct child with this tag."""
        return next((c for c in self.children if c.tag == tag), None)

    def need(self, tag: int, what: str) -> Node:
        child = self.find(tag)
        if child is None:
            raise TlvError(f"{what}: tag {tag:X} missing")
        return child


def header(buf: bytes, pos: int, end: int | None = None) -> tuple[int, bool, int, int]:
    """(tag, constructed, value start, value length) of the TLV at pos; the length is only
    checked to be a definite length of at most 4 bytes, not against the buffer (files.py reads a
    file's first bytes to learn its size)."""
    end = len(buf) if end is None else end
    if pos >= end:
        raise TlvError(f"TLV truncated at {pos}: no tag")
    first = buf[pos]
    tag = first
    pos += 1
    if first & 0x1F == 0x1F:                       # multi-byte tag: at most 3 more bytes
        for _ in range(3):
            if pos >= end:
                raise TlvError(f"TLV truncated at {pos}: in a tag")
            tag = (tag << 8) | buf[pos]
            pos += 1
            if not buf[pos - 1] & 0x80:
                break
        else:
            raise TlvError(f"tag longer than 4 bytes at {pos}")
    if pos >= end:
        raise TlvError(f"TLV truncated at {pos}: no length")
    n = buf[pos]
    pos += 1
    if n == 0x80:
        raise TlvError(f"indefinite length at {pos - 1} (not DER)")
    if n > 0x80:
        k = n & 0x7F
        if k > 4:
            raise TlvError(f"length of {k} bytes at {pos - 1}")
        if pos + k > end:
            raise TlvError(f"TLV truncated at {pos}: in a length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    return tag, bool(first & 0x20), pos, n


def parse_all(buf: bytes, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> list[Node]:
    """Every top-level TLV of buf, constructed ones with their children parsed."""
    buf = bytes(buf)
    budget = [max_items]
    return _parse(buf, 0, len(buf), 0, max_depth, budget)


def parse(buf: bytes, tag: int | None = None, *, max_depth: int = MAX_DEPTH,
          max_items: int = MAX_ITEMS) -> Node:
    """The single TLV that buf holds (trailing bytes are refused), optionally of a given tag."""
    nodes = parse_all(buf, max_depth=max_depth, max_items=max_items)
    if len(nodes) != 1:
        raise TlvError(f"expected one TLV, found {len(nodes)}")
    if tag is not None and nodes[0].tag != tag:
        raise TlvError(f"expected tag {tag:X}, found {nodes[0].tag:X}")
    return nodes[0]


def _parse(buf: bytes, pos: int, end: int, depth: int, max_depth: int, budget: list[int]) -> list[Node]:
    if depth > max_depth:
        raise TlvError(f"TLV nested deeper than {max_depth} at {pos}")
    nodes: list[Node] = []
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise TlvError("too many TLV items")
        start = pos
        tag, constructed, vstart, n = header(buf, pos, end)
        if n > end - vstart:
            raise TlvError(f"TLV at {start} claims {n} bytes, {end - vstart} remain")
        node = Node(tag, constructed, buf, start, vstart, vstart + n)
        if constructed:
            node.children = _parse(buf, vstart, vstart + n, depth + 1, max_depth, budget)
        nodes.append(node)
        pos = vstart + n
    return nodes


def encode(tag: int, value: bytes) -> bytes:
    """DER encoding of one TLV (for the commands we build and the simulated chip)."""
    t = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        ln = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(b)]) + b
    return t + ln + value


def der_int(node: Node, what: str, max_bytes: int = 8) -> int:
    """A small INTEGER's value (bounded: a version or a data group number)."""
    if node.tag != 0x02 or not 0 < len(node.value) <= max_bytes:
        raise TlvError(f"{what}: not a small INTEGER")
    return int.from_bytes(node.value, "big", signed=True)


def oid(node: Node, what: str) -> str:
    """Dotted text of an OBJECT IDENTIFIER."""
    if node.tag != 0x06 or not 0 < len(node.value) <= 64:
        raise TlvError(f"{what}: not an OID")
    arcs: list[int] = []
    v = 0
    for b in node.value:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(v)
            v = 0
    if node.value[-1] & 0x80:
        raise TlvError(f"{what}: OID truncated")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def encode_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for a in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        body += bytes(reversed(chunk))
    return encode(0x06, bytes(body))
