"""The QR code model 2 symbol structure (ISO/IEC 18004), as far as reading a sampled grid needs it:
function patterns, format information, codeword placement, masks, block structure, segments.

Tables and formulas follow the standard (and Project Nayuki's reference generator, which states
them compactly). Everything here works on numpy grids of modules, row-major, True = dark.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Error correction levels in table order, with their 2-bit format codes.
ECLS = ("L", "M", "Q", "H")
ECL_BITS = {"L": 1, "M": 0, "Q": 3, "H": 2}

ECC_PER_BLOCK = {
    "L": (-1, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28, 30, 30, 26,
          28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "M": (-1, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28,
          28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28),
    "Q": (-1, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30, 30, 30, 30,
          28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
    "H": (-1, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24, 30, 30, 30,
          30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30),
}
NUM_BLOCKS = {
    "L": (-1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8, 8, 9, 9, 10, 12, 12, 12, 13, 14, 15, 16,
          17, 18, 19, 19, 20, 21, 22, 24, 25),
    "M": (-1, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28,
          29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49),
    "Q": (-1, 1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29, 34, 34, 35,
          38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68),
    "H": (-1, 1, 1, 2, 4, 4, 4, 5, 6, 8, 8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32, 35, 37, 40, 42,
          45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81),
}


def size_of(version: int) -> int:
    return 17 + 4 * version


def alignment_positions(version: int) -> list[int]:
    if version == 1:
        return []
    n = version // 7 + 2
    step = (version * 8 + n * 3 + 5) // (n * 4 - 4) * 2
    return sorted([size_of(version) - 7 - i * step for i in range(n - 1)] + [6])


def raw_data_modules(version: int) -> int:
    result = (16 * version + 128) * version + 64
    if version >= 2:
        n = version // 7 + 2
        result -= (25 * n - 10) * n - 55
        if version >= 7:
            result -= 36
    return result


@lru_cache(maxsize=64)
def function_pattern(version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(is_function, expected_dark, colour_known) grids: which modules are fixed patterns, and their
    colour where it is known (finders, separators, timing, alignment, the dark module; format and
    version areas are function modules whose colour depends on the symbol). Cached: read only."""
    n = size_of(version)
    func = np.zeros((n, n), bool)
    dark = np.zeros((n, n), bool)
    known = np.zeros((n, n), bool)

    def finder(r0: int, c0: int) -> None:
        for dr in range(-1, 8):
            for dc in range(-1, 8):
                r, c = r0 + dr, c0 + dc
                if 0 <= r < n and 0 <= c < n:
                    func[r, c] = known[r, c] = True
                    inner = 0 <= dr <= 6 and 0 <= dc <= 6
                    ring = max(abs(dr - 3), abs(dc - 3))
                    dark[r, c] = inner and ring != 2
    finder(0, 0)
    finder(0, n - 7)
    finder(n - 7, 0)
    for i in range(n):
        for r, c in ((6, i), (i, 6)):
            if not func[r, c]:
                func[r, c] = known[r, c] = True
                dark[r, c] = i % 2 == 0
    pos = alignment_positions(version)
    for r in pos:
        for c in pos:
            if (r, c) in ((6, 6), (6, n - 7), (n - 7, 6)):
                continue
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    func[r + dr, c + dc] = known[r + dr, c + dc] = True
                    dark[r + dr, c + dc] = max(abs(dr), abs(dc)) != 1
    # format information (both copies) and the dark module
    func[8, :9] = func[:9, 8] = True
    func[8, n - 8:] = func[n - 7:, 8] = True
    func[n - 8, 8] = known[n - 8, 8] = dark[n - 8, 8] = True
    if version >= 7:
        func[:6, n - 11:n - 8] = func[n - 11:n - 8, :6] = True
    return func, dark, known   # dark is only ever set where the colour is known


def format_positions(n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(row, col) of format bits 0..14, first copy and second copy."""
    first = [(i, 8) for i in range(6)] + [(7, 8), (8, 8), (8, 7)] + [(8, 14 - i) for i in range(9, 15)]
    second = [(8, n - 1 - i) for i in range(8)] + [(n - 15 + i, 8) for i in range(8, 15)]
    return first, second


def _format_word(data: int) -> int:
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    return ((data << 10) | rem) ^ 0x5412


FORMAT_WORDS = {_format_word(d): d for d in range(32)}


def decode_format(bits: list[int]) -> tuple[str, int, int] | None:
    """(ecl, mask, distance) of the valid format word nearest to these 15 bits (bit i at index i)."""
    value = sum(b << i for i, b in enumerate(bits))
    best = min(FORMAT_WORDS, key=lambda w: bin(w ^ value).count("1"))
    data = FORMAT_WORDS[best]
    ecl = {v: k for k, v in ECL_BITS.items()}[data >> 3]
    return ecl, data & 7, bin(best ^ value).count("1")


def mask_grid(mask: int, n: int) -> np.ndarray:
    y, x = np.indices((n, n))
    return [
        (y + x) % 2 == 0, y % 2 == 0, x % 3 == 0, (y + x) % 3 == 0, (y // 2 + x // 3) % 2 == 0,
        (y * x) % 2 + (y * x) % 3 == 0, ((y * x) % 2 + (y * x) % 3) % 2 == 0, ((y + x) % 2 + (y * x) % 3) % 2 == 0,
    ][mask]


@lru_cache(maxsize=64)
def codeword_order(version: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of every data-area module, in bit order (the zigzag of the standard)."""
    n = size_of(version)
    func = function_pattern(version)[0]
    rows, cols = [], []
    right = n - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for vert in range(n):
            y = n - 1 - vert if upward else vert
            for j in range(2):
                x = right - j
                if not func[y, x]:
                    rows.append(y)
                    cols.append(x)
        right -= 2
    return np.array(rows), np.array(cols)


def blocks_layout(version: int, ecl: str) -> tuple[int, int, int, int]:
    """(blocks, short blocks, short block length, ecc codewords per block)."""
    nblocks, ecc = NUM_BLOCKS[ecl][version], ECC_PER_BLOCK[ecl][version]
    raw = raw_data_modules(version) // 8
    return nblocks, nblocks - raw % nblocks, raw // nblocks, ecc


def deinterleave(codewords: list[int], version: int, ecl: str) -> list[list[int]]:
    """Split the symbol's codeword stream into its blocks (each: data codewords, then ecc)."""
    nblocks, nshort, shortlen, ecc = blocks_layout(version, ecl)
    blocks: list[list[int]] = [[] for _ in range(nblocks)]
    k = 0
    for i in range(shortlen + 1):
        for b in range(nblocks):
            if i == shortlen - ecc and b < nshort:
                continue
            blocks[b].append(codewords[k])
            k += 1
    return blocks


def block_index(version: int, ecl: str) -> list[tuple[int, int]]:
    """For each codeword of the stream: (block, position in block)."""
    nblocks, nshort, shortlen, ecc = blocks_layout(version, ecl)
    out, counts = [], [0] * nblocks
    for i in range(shortlen + 1):
        for b in range(nblocks):
            if i == shortlen - ecc and b < nshort:
                continue
            out.append((b, counts[b]))
            counts[b] += 1
    return out


ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


class SegmentError(ValueError):
    pass


def parse_segments(data: bytes, version: int) -> bytes:
    """The payload bytes of the data codewords (numeric, alphanumeric, byte, kanji as Shift JIS
    bytes, ECI designators skipped). Raises SegmentError on anything the standard does not allow,
    including padding that is not the standard 0xEC 0x11 sequence: a strong check against a wrong
    correction."""
    bits = "".join(f"{b:08b}" for b in data)
    pos, out = 0, bytearray()
    group = 0 if version <= 9 else 1 if version <= 26 else 2

    def take(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise SegmentError("segment runs past the data")
        value = int(bits[pos:pos + n], 2) if n else 0
        pos += n
        return value

    while len(bits) - pos >= 4:
        mode = take(4)
        if mode == 0:
            break
        if mode == 1:  # numeric
            count = take((10, 12, 14)[group])
            for _ in range(count // 3):
                v = take(10)
                if v > 999:
                    raise SegmentError("bad numeric triple")
                out += f"{v:03d}".encode()
            if count % 3 == 2:
                v = take(7)
                if v > 99:
                    raise SegmentError("bad numeric pair")
                out += f"{v:02d}".encode()
            elif count % 3 == 1:
                v = take(4)
                if v > 9:
                    raise SegmentError("bad numeric digit")
                out += str(v).encode()
        elif mode == 2:  # alphanumeric
            count = take((9, 11, 13)[group])
            for _ in range(count // 2):
                v = take(11)
                if v >= 45 * 45:
                    raise SegmentError("bad alphanumeric pair")
                out += (ALNUM[v // 45] + ALNUM[v % 45]).encode()
            if count % 2:
                v = take(6)
                if v >= 45:
                    raise SegmentError("bad alphanumeric character")
                out += ALNUM[v].encode()
        elif mode == 4:  # byte
            count = take((8, 16, 16)[group])
            out += bytes(take(8) for _ in range(count))
        elif mode == 8:  # kanji, as Shift JIS bytes
            count = take((8, 10, 12)[group])
            for _ in range(count):
                v = take(13)
                v = (v // 0xC0) << 8 | (v % 0xC0)
                v += 0x8140 if v < 0x1F00 else 0xC140
                out += bytes((v >> 8, v & 0xFF))
        elif mode == 7:  # ECI designator
            first = take(8)
            if first & 0x80:
                take(8 if (first & 0xC0) == 0x80 else 16)
        elif mode == 3:  # structured append header
            take(16)
        elif mode in (5, 9):  # FNC1
            take(8 if mode == 9 else 0)
        else:
            raise SegmentError(f"mode {mode} is not a QR mode")
    # the rest: zero bits to the byte boundary, then 0xEC 0x11 ... padding
    rest = (pos + 7) // 8
    if bits[pos:rest * 8].strip("0"):
        raise SegmentError("terminator bits are not zero")
    for i, b in enumerate(data[rest:]):
        if b != (0xEC, 0x11)[i % 2]:
            raise SegmentError("padding is not 0xEC 0x11")
    return bytes(out)
