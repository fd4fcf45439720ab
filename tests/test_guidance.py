"""Guidance for a code located but not read (agent.decode.guidance): each reason from the
property that was really degraded, on frames constructed from a real BHYT payload's QR."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from agent.decode import FrameReader
from agent.decode.guidance import REASONS, measure
from agent.sim.payloads import bhyt
from agent.sim.screen import qr_modules

MODULES = qr_modules(bhyt(random.Random(1)))
N = MODULES.shape[0]


def frame(module_px: float, *, contrast: float = 0.85, base: float = 15.0, smear: int = 0,
          glare: float = 0.0, noise: float = 3.0) -> tuple[np.ndarray, list]:
    """A code of `module_px` pixels a module on a counter-grey frame, with its corners; degraded by
    a contrast squeeze (dim screen), a linear motion smear, a saturated reflection."""
    side = int(round(N * module_px))
    interp = cv2.INTER_AREA if module_px < 1.5 else cv2.INTER_NEAREST
    code = cv2.resize(MODULES, (side, side), interpolation=interp).astype(np.float32)
    q = int(4 * module_px)
    img = np.full((720, 1280), 180, np.float32)
    y0, x0 = 360 - side // 2, 640 - side // 2
    img[y0 - q:y0 + side + q, x0 - q:x0 + side + q] = 255
    img[y0:y0 + side, x0:x0 + side] = code
    img = base + img * contrast
    if glare:
        yy, xx = np.mgrid[0:720, 0:1280]
        cx, cy = x0 + side * 0.55, y0 + side * 0.45
        img += glare * 255 * np.exp(-(((xx - cx) / (side * 0.22)) ** 2 + ((yy - cy) / (side * 0.18)) ** 2))
    if smear:
        k = np.zeros((smear, smear), np.float32)
        k[smear // 2, :] = 1
        k = cv2.warpAffine(k, cv2.getRotationMatrix2D((smear / 2 - .5, smear / 2 - .5), 30, 1), (smear, smear))
        img = cv2.filter2D(img, -1, k / k.sum())
    img += np.random.default_rng(0).normal(0, noise, img.shape)
    corners = [(x0, y0), (x0 + side, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    return np.clip(img, 0, 255).astype(np.uint8), corners


CASES = {
    "closer": dict(module_px=1.6),
    "glare": dict(module_px=4, glare=3.0),
    "dim": dict(module_px=4, contrast=0.15, base=10),
    "still": dict(module_px=4, smear=12),
    "unknown": dict(module_px=4),
}


@pytest.mark.parametrize("reason", REASONS)
def test_each_reason_from_the_property_degraded(reason):
    gray, corners = frame(**CASES[reason])
    m = measure(gray, corners, modules=N)
    assert m is not None
    assert m.reason() == reason, m


def test_module_size_from_the_modules_located_else_a_typical_card():
    gray, corners = frame(4)
    assert measure(gray, corners, modules=N).module_px == pytest.approx(4, abs=0.1)
    assert measure(gray, corners, modules=None).module_px == pytest.approx(4 * N / 49, abs=0.1)


def test_candidates_outside_the_frame_or_degenerate_are_not_measured():
    gray, _ = frame(4)
    assert measure(gray, [(2000, 2000), (2100, 2000), (2100, 2100), (2000, 2100)]) is None
    assert measure(gray, [(10, 10)] * 4) is None
    assert measure(gray, [(float("nan"), 0)] * 4) is None


def test_the_reader_says_glare_for_a_reflection_it_cannot_read_past():
    gray, _ = frame(4, glare=6.0)
    reader = FrameReader()
    for _ in range(2):
        result = reader.read(gray)
    assert not result.codes and result.candidates
    assert result.guidance == "glare"
    assert result.located and len(result.located[0][0]) == 4


def test_the_reader_says_closer_for_a_code_too_small_to_read():
    gray, _ = frame(1.2)
    gray = cv2.GaussianBlur(gray, (0, 0), 0.5)
    result = FrameReader().read(gray)
    assert not result.codes and result.candidates
    assert result.guidance == "closer"


def test_a_read_code_has_no_guidance():
    gray, _ = frame(4)
    result = FrameReader().read(gray)
    assert result.codes and result.guidance is None and result.located == []


def test_try_again_carries_the_reason_most_frames_gave():
    from agent.checkin import Action, Presenter
    from agent.decode import DecodeResult

    p = Presenter(try_again_s=1.0, try_again_every_s=2.0)
    got = []
    for i, reason in enumerate(["glare", "unknown", "closer", "glare", "unknown", "unknown"]):
        got += p.on_frame(i * 0.25, DecodeResult(candidates=1, guidance=reason))
    assert [(d.action, d.reason) for d in got] == [(Action.TRY_AGAIN, "glare")]
    got = []
    for i in range(12):   # the next attempt counts afresh: only 'unknown' measured
        got += p.on_frame(2.0 + i * 0.25, DecodeResult(candidates=1, guidance="unknown"))
    assert [(d.action, d.reason) for d in got] == [(Action.TRY_AGAIN, "unknown")]


def test_modules_from_what_zxing_read_of_the_symbol():
    from types import SimpleNamespace

    from agent.decode.decoder import _modules

    def located(version):
        return SimpleNamespace(extra={"Version": version})
    assert _modules(located("11")) == 61
    assert _modules(located("M3")) == 15          # a model 2 code's finder seen as a Micro QR
    assert _modules(located("R13x77")) == 45
    assert _modules(located("41")) is None and _modules(located("Mx")) is None
    assert _modules(SimpleNamespace(extra=None)) is None


def test_status_and_snapshot_show_the_last_reasons():
    from agent.admin.status import render
    from agent.decode.annotate import annotate

    s = {"station": "s", "version": "x", "service": "active", "daemon": "running", "status_stale_s": None,
         "camera": {"source": "replay"}, "mqtt": {"configured": False}, "outbox": {"queue_depth": 0},
         "clock_synced": True, "disk_free_mb": 100, "faults": ["voice: aplay -D default: audio open error"],
         "counters": {"last_guidance": [{"reason": "glare", "at": 1.0}, {"reason": "closer", "at": 2.0}]}}
    text = render(s)
    assert "last reasons (newest last): glare, closer" in text
    assert "WARNING      voice: aplay" in text and "FAULT" not in text
    gray, _ = frame(4)
    plain, noted = annotate(gray, []), annotate(gray, [], "glare")
    assert plain.shape == noted.shape and (plain != noted).any()   # the reason is written on the frame
