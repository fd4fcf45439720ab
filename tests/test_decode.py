"""The decoder on simulated phone screens (every difficulty) and on a floor of real photos.

Floors, not timings: the measured figures are in bench/README.md; these assert behaviour
with a margin so they hold on a loaded CI machine.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.decode import DEFAULT_ORDER, STREAM_ORDER, FrameReader, baseline, decode, decode_with
from agent.sim.payloads import bhyt
from agent.sim.screen import empty_scene, render

from bench.dataset import codes_read, load_photos

ROOT = Path(__file__).resolve().parents[1]

N = 16


def shots(level, n=N, base=0):
    return [render(bhyt(random.Random(f"t{level}{i}")), level, base + i) for i in range(n)]


def inside(corners, polygon) -> bool:
    cx, cy = np.asarray(corners, np.float32).mean(0)
    return cv2.pointPolygonTest(polygon.reshape(-1, 1, 2), (float(cx), float(cy)), False) >= 0


def test_simulator_is_seeded_and_labelled():
    a, b = render("HELLO", "hard", 7), render("HELLO", "hard", 7)
    assert np.array_equal(a.frame, b.frame)
    assert not np.array_equal(a.frame, render("HELLO", "hard", 8).frame)
    assert a.frame.shape == (720, 1280) and a.frame.dtype == np.uint8
    assert (a.corners >= 0).all() and (a.corners[:, 0] < 1280).all() and (a.corners[:, 1] < 720).all()


@pytest.mark.parametrize("level,floor", [("easy", 15), ("medium", 12), ("hard", 4)])
def test_reads_simulated_screens_at_every_level(level, floor):
    read = wrong = 0
    for shot in shots(level):
        result = decode(shot.frame)
        for code in result.codes:
            if code.text == shot.text:
                read += 1
                assert inside(code.corners, shot.corners)  # corners are in frame coordinates
                assert code.raw == shot.text.encode()
            else:
                wrong += 1
    assert wrong == 0
    assert read >= floor, f"{level}: {read}/{N} read"


def test_cascade_beats_plain_zxing_on_hard_screens():
    frames = shots("hard", 24, base=100)
    plain = sum(any(c.text == s.text for c in baseline(s.frame)) for s in frames)
    ours = sum(any(c.text == s.text for c in decode(s.frame, gate=False).codes) for s in frames)
    assert ours > plain, (ours, plain)


def test_frame_reader_reads_every_hard_presentation_within_half_a_second():
    for i in range(6):
        text = bhyt(random.Random(f"stream{i}"))
        reader = FrameReader()
        frames_needed = None
        for f in range(15):
            result = reader.read(render(text, "hard", 300 + 20 * i + f).frame)
            assert all(c.text == text for c in result.codes)
            if result.codes:
                frames_needed = f + 1
                break
        assert frames_needed is not None, f"presentation {i} not read in 15 frames"


def test_frame_reader_rotates_strategies_and_restarts_after_a_read():
    reader = FrameReader()
    blank = np.full((720, 1280), 128, np.uint8)
    runs = [reader.read(blank).strategies_run for _ in range(3)]
    assert [r[1] for r in runs] == list(STREAM_ORDER[:3])
    assert reader.read(blank, active=False).strategies_run == ["plain"]  # still empty scene: no rotation
    shot = render("CODE", "easy", 1)
    assert reader.read(shot.frame).codes
    assert reader.read(blank).strategies_run[1] == STREAM_ORDER[0]


def test_no_code_no_read():
    for i in range(5):
        frame = empty_scene(i)
        assert decode(frame).codes == [] and decode(frame, gate=False).codes == []


@pytest.mark.parametrize("reader", [decode, baseline], ids=["cascade", "baseline"])
def test_control_characters_are_read_as_the_code_holds_them(reader):
    """Not zxing-cpp's default rendering of a binary content ('<ESC>', '<HT>'): five characters the
    card never had would reach the check-in and the HIS; judging them is the station's job."""
    import zxingcpp

    text = "DN4790123456789|\x1bNguy\u1ec5n\tV\u0103n|01/01/1990\r\n|\x7f"
    symbol = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    frame = np.full((480, 640), 255, np.uint8)
    img = np.array(symbol.to_image(scale=5, add_quiet_zones=True))
    frame[40:40 + img.shape[0], 100:100 + img.shape[1]] = img
    result = reader(frame)
    codes = result.codes if hasattr(result, "codes") else result
    assert [c.text for c in codes] == [text]
    assert codes[0].raw == text.encode()


def test_a_micro_qr_is_located_never_read():
    """An M1 Micro QR has no error correction (two codewords of error detection): the corner of a
    card half out of the frame, rectified, "read" as one (bench/miscorrect.py). No card or payment
    code is a Micro QR, so none is a text; it is still located (a model 2 code under a highlight
    is often located only as one)."""
    import zxingcpp

    micro = zxingcpp.create_barcode("104", zxingcpp.BarcodeFormat.MicroQRCode)
    img = np.array(zxingcpp.write_barcode_to_image(micro, scale=8))
    canvas = np.full((720, 1280), 200, np.uint8)
    canvas[300:300 + img.shape[0], 600:600 + img.shape[1]] = img
    assert [b.text for b in zxingcpp.read_barcodes(canvas)] == ["104"]
    result = decode(canvas)
    assert result.codes == [] and result.candidates == 1
    reader = FrameReader()
    assert not any(reader.read(canvas).codes for _ in range(8))
    assert decode_with(canvas, "double").codes == []


def test_gate_stops_empty_frames_after_a_glance():
    """An empty counter costs the plain read and one half-size glance, nothing more."""
    for i in range(5):
        assert decode(empty_scene(i)).strategies_run == ["plain", "glance"]
    assert decode(empty_scene(0), gate=False, budget_x=1000).strategies_run == ["plain", *DEFAULT_ORDER]


@pytest.mark.parametrize("frame", [np.zeros((0, 0), np.uint8), np.zeros((5, 5), np.uint8),
                                   np.zeros((720, 1280), np.uint8), np.full((720, 1280), 255, np.uint8)])
def test_degenerate_frames(frame):
    assert decode(frame).codes == []
    assert FrameReader().read(frame).codes == []


def test_colour_frames_accepted():
    shot = render("COLOUR", "easy", 3)
    bgr = cv2.cvtColor(shot.frame, cv2.COLOR_GRAY2BGR)
    assert [c.text for c in decode(bgr).codes] == ["COLOUR"]


def test_dark_mode_code():
    inverted = 255 - render("DARK MODE", "easy", 4).frame
    assert [c.text for c in decode(inverted).codes] == ["DARK MODE"]


def test_each_strategy_runs_alone():
    shot = render("STRATEGY", "easy", 5)
    for name in sorted({*DEFAULT_ORDER, *STREAM_ORDER}):
        result = decode_with(shot.frame, name)
        assert result.strategies_run == [name]
        assert all(c.text == "STRATEGY" for c in result.codes)


# --- real photographs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos():
    return load_photos()  # raises with the expected path if ../shared is absent


@pytest.mark.slow
@pytest.mark.alone   # the budget is in wall time: bright spots read 21 < 22 with 5 other workers busy
def test_real_photos_floor(photos):
    """Measured with budget_x=50: plain zxing-cpp 266/409, ours 313/409, glare 13 -> 20,
    bright spots 11 -> 26. Floors with margin (the budget is in time, so a loaded machine reads
    a little less)."""
    plain = ours = total = 0
    per_cat: dict[str, list[int]] = {}
    for ph in photos:
        gray = ph.gray()
        p = codes_read(ph.polygons, [c.corners for c in baseline(gray)])
        o = codes_read(ph.polygons, [c.corners for c in decode(gray, budget_x=50).codes])
        plain, ours, total = plain + p, ours + o, total + len(ph.polygons)
        per_cat.setdefault(ph.category, [0, 0])
        per_cat[ph.category][0] += p
        per_cat[ph.category][1] += o
    assert total == 409
    assert ours >= 300, ours
    assert ours >= plain + 34, (ours, plain)
    for cat, (p, o) in per_cat.items():
        assert o >= p, f"{cat}: ours {o} < plain {p}"
    assert per_cat["glare"][1] >= 18 and per_cat["bright_spots"][1] >= 22, per_cat


def test_cli_decode_json(photos, tmp_path):
    paths = [str(ph.path) for ph in photos if ph.category == "nominal"][:3]
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("nope")
    proc = subprocess.run([sys.executable, "-m", "agent", "decode", "--json", *paths, str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    assert [line["file"] for line in lines] == paths
    for line in lines:
        assert set(line) == {"file", "codes", "ms"} and line["ms"] >= 0
        for code in line["codes"]:
            assert set(code) == {"text", "corners"} and len(code["corners"]) == 4
    proc = subprocess.run([sys.executable, "-m", "agent", "decode", "--json", "--strategy", "baseline", paths[0]],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["file"] == paths[0]


def test_slow_frames_are_budgeted_from_the_typical_time():
    """A moiré frame whose plain read takes 10x the usual must not get 10x the usual budget."""
    from agent.decode import decoder

    costs = decoder.CostModel()     # each reader owns its own: nothing to patch
    pixels = 1280 * 720
    for _ in range(20):
        assert costs.typical_base(0.002, pixels) == 0.002
    assert costs.typical_base(0.020, pixels) == pytest.approx(decoder.SLOW_FRAME_X * 0.002)
    assert costs.typical_base(0.001, pixels) == 0.001  # a fast frame keeps its own time
    assert costs.typical_base(0.004, pixels // 4) < 0.0015  # the typical time scales with size
    assert decoder.CostModel().plain_s_per_px is None and decoder.FrameReader().costs is not costs


def veiled(text: str, glare: float = 12.0, seed: int = 0) -> np.ndarray:
    """A code at 5 px a module under a lamp's reflection `glare` times its white, taken at a short
    exposure that keeps the reflection just out of saturation (the capture loop's short frame):
    in linear light with shot noise, then the ISP's 1/2.2 tone curve."""
    from agent.sim.screen import qr_modules
    m = np.pad(qr_modules(text).astype(np.float32) / 255, 4, constant_values=1.0)
    img = cv2.resize(m, None, fx=5, fy=5, interpolation=cv2.INTER_NEAREST)
    n = img.shape[0]
    yy, xx = np.mgrid[0:n, 0:n]
    lin = np.where(img > 0.5, 1.0, 0.02) + glare * np.exp(-(((xx - 0.22 * n) / (0.12 * n)) ** 2
                                                            + ((yy - 0.78 * n) / (0.1 * n)) ** 2))
    frame = np.full((720, 1280), 0.3, np.float32)
    frame[100:100 + n, 300:300 + n] = cv2.GaussianBlur(lin.astype(np.float32), (0, 0), 1.0)
    e = frame / (glare + 2)
    e += np.random.default_rng(seed).normal(0, 1, e.shape).astype(np.float32) * np.sqrt(np.clip(e, 0, 1) / 4500)
    return (255 * np.clip(e, 0, 1) ** (1 / 2.2)).astype(np.uint8)


def test_a_code_under_a_reflection_reads_levelled_and_the_reader_levels_short_frames():
    from agent.capture.view import View
    texts = [bhyt(random.Random(f"veil{i}")) for i in range(12)]
    frames = [veiled(t, seed=i) for i, t in enumerate(texts)]
    plain = sum(bool(decode_with(g, "plain").codes) for g in frames)
    levelled = sum(any(c.text == t for c in decode_with(g, "level").codes) for t, g in zip(texts, frames))
    assert plain <= 4 and levelled >= 10                  # measured: 3 and 12 of 12
    # the stream reader gives a bracket's short frame (marked by the capture loop) to "level", and
    # a frame merely shorter than the last ones (auto exposure stepping down) to the rotation
    normal = View((0, 0, 4608, 2592), (1280, 720), 8000, 2.0)
    short = View((0, 0, 4608, 2592), (1280, 720), 1300, 1.0, short=True)
    k = next(k for k, g in enumerate(frames) if not decode_with(g, "plain").codes)
    reader = FrameReader(infer_finders=False)           # (inferring the hidden finder reads some too)
    reader.read(np.full((720, 1280), 90, np.uint8), view=normal)
    res = reader.read(frames[k], view=short)
    assert res.strategies_run[-1] == "level" and [c.text for c in res.codes] == [texts[k]]
    reader = FrameReader(infer_finders=False)
    reader.read(np.full((720, 1280), 90, np.uint8), view=normal)
    res = reader.read(frames[k], view=View((0, 0, 4608, 2592), (1280, 720), 1300, 1.0))
    assert "level" not in res.strategies_run
