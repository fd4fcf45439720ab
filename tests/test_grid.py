"""The decoder's second stage (agent/decode/grid.py): sampling a located code module by module,
erasures under glare, Reed-Solomon with a margin, and fusion over the frames of a presentation."""

from __future__ import annotations

import random

import numpy as np
import pytest
import zxingcpp

from agent.decode import FrameReader, decode, grid, qrspec
from agent.decode.decoder import _corners

QR = zxingcpp.BarcodeFormat.QRCode
CCCD = ("079090001234|025123456|Nguyen Van An|01011990|Nam|12 Le Loi, Ben Nghe, Quan 1, "
        "TP Ho Chi Minh|15062021")


def symbol(text: str, ecl: str = "M", scale: int = 6) -> tuple[np.ndarray, np.ndarray, dict]:
    code = zxingcpp.create_barcode(text, QR, ec_level=ecl)
    img = np.ascontiguousarray(np.array(code.to_image(scale=scale, add_quiet_zones=True)))
    read = zxingcpp.read_barcodes(img, formats=QR)[0]
    return img, _corners(read), read.extra


def glare(img: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """A saturated specular highlight on the glass."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = img.copy()
    out[(xx - cx) ** 2 + (yy - cy) ** 2 < radius ** 2] = 255
    return out


@pytest.mark.parametrize("ecl", ["L", "M", "Q", "H"])
def test_clean_symbols_of_many_versions_read_through_the_tables(ecl):
    rng = random.Random(ecl)
    versions = set()
    for length in (5, 30, 70, 120, 200, 320, 500, 800, 1200):
        text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789|") for _ in range(length))
        if ecl == "H" and length > 1200:
            continue
        img, corners, extra = symbol(text, ecl, scale=3)
        version = int(extra["Version"])
        versions.add(version)
        g = grid.sample(img, corners, version)
        assert g.pattern_errors == 0.0
        assert grid.read_format(g) == (ecl, extra["DataMask"])
        assert grid.decode_grid(g) == text.encode(), (version, ecl)
    assert len(versions) >= 8 and max(versions) >= 20


@pytest.mark.alone   # decode()'s budget is 10x the plain read's wall time: failed once with 5 other workers busy
def test_a_glare_blob_reads_through_erasures_where_zxing_fails():
    img, corners, extra = symbol(CCCD)
    h, w = img.shape
    damaged = glare(img, w * 0.55, h * 0.6, 50)   # about 12% of the modules under the highlight
    assert not any(b.valid for b in zxingcpp.read_barcodes(damaged, formats=QR))
    result = decode(damaged)
    assert [(c.text, c.strategy) for c in result.codes] == [(CCCD, "bitlevel")]
    # the same grid with every module taken at face value (no erasures) does not decode
    g = grid.sample(damaged, corners, int(extra["Version"]))
    assert (g.weight == 0).sum() > 50
    hard = grid.Grid(g.version, g.dark, np.ones_like(g.weight), g.pattern_errors)
    assert grid.decode_grid(hard, extra["ECLevel"], extra["DataMask"]) is None


def test_a_presentation_whose_every_frame_fails_reads_once_fused():
    img, corners, extra = symbol(CCCD)
    h, w = img.shape
    # the reflection slides across the code as the patient tilts the phone: each frame hides a
    # different part, too much for any one frame, even with erasures
    frames = [glare(img, w * x, h * 0.55, 66) for x in (0.42, 0.62, 0.5)]
    for f in frames:
        assert not decode(f).codes
    unfused = FrameReader(fuse=False)
    assert not any(unfused.read(f).codes for f in frames)
    fused = FrameReader()
    texts = [[c.text for c in fused.read(f).codes] for f in frames]
    assert [CCCD] in texts and texts[0] == []
    assert any(c == [CCCD] for c in texts[1:])


def test_noise_never_decodes():
    """A wrong read is worse than none: random grids and misplaced grids give nothing."""
    rng = np.random.default_rng(7)
    for version in (1, 2, 4, 7, 10):
        n = qrspec.size_of(version)
        for _ in range(40):
            dark = rng.random((n, n)).astype(np.float32)
            weight = rng.random((n, n)).astype(np.float32)
            g = grid.Grid(version, dark, weight, 0.0)
            for ecl in "LMQH":
                assert grid.decode_grid(g, ecl, int(rng.integers(8))) is None
    img, corners, extra = symbol(CCCD)
    for version in (5, 7):                       # the right place, the wrong version
        assert grid.decode_grid(grid.sample(img, corners, version)) in (None,)


def test_padding_and_modes_are_checked():
    good = bytes([0x40, 0x24, 0x14, 0x20, 0xEC, 0x11, 0xEC, 0x11])  # byte mode, 2 bytes "AB"
    assert qrspec.parse_segments(good, 1) == b"AB"
    with pytest.raises(qrspec.SegmentError):
        qrspec.parse_segments(good[:-1] + b"\x00", 1)                    # padding broken
    with pytest.raises(qrspec.SegmentError):
        qrspec.parse_segments(bytes([0xF0, 0, 0, 0]), 1)                  # mode 15 does not exist


def test_a_code_with_one_finder_blotted_out_reads():
    """A reflection on a finder pattern: zxing-cpp does not even locate the code; the stream
    reader infers the hidden finder from the other two and reads it."""
    import cv2

    from agent.decode import finders

    img, corners, _ = symbol(CCCD, scale=5)
    canvas = np.full((720, 1280), 200, np.uint8)
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    m[:, 2] += (500, 200)
    canvas = cv2.warpAffine(img, m, (1280, 720), dst=canvas, borderMode=cv2.BORDER_TRANSPARENT)
    c = cv2.transform(corners.reshape(-1, 1, 2), m).reshape(4, 2)
    finder = c[0] * 0.85 + c.mean(0) * 0.15                       # the top-left finder
    hidden = glare(canvas, finder[0], finder[1], 45)
    assert not zxingcpp.read_barcodes(hidden, formats=QR, return_errors=True)
    assert len(finders.find_finders(hidden)) == 2
    assert [raw for _, _, raw in finders.infer(hidden) if raw] == [CCCD.encode()]
    reader = FrameReader()
    texts = [[c.text for c in reader.read(hidden).codes] for _ in range(4)]
    assert [CCCD] in texts
    assert not any(FrameReader(infer_finders=False).read(hidden).codes for _ in range(4))
