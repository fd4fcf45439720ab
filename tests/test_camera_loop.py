"""The closed capture loop (agent/capture/steer.py) on the virtual Raspberry Pi camera
(agent/sim/vcam/picamera2): agent/capture/picam.py runs unchanged against it, frames on a simulated
clock (one frame duration per capture, no sleeping). Rendering a frame costs about 40 ms, so the
tests that run whole presentations are marked slow."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.capture import picam
from agent.capture.picam import Picamera2Source
from agent.capture.steer import CAP_MARGIN
from agent.capture.view import Seen
from agent.checkin import Presenter
from agent.config import CameraConfig
from agent.sim import camera as phys
from agent.sim.payloads import bhyt
from support.steering import drive

VCAM = str(Path(__file__).resolve().parents[1] / "agent" / "sim" / "vcam")


@pytest.fixture
def vcam(monkeypatch):
    monkeypatch.syspath_prepend(VCAM)
    sys.modules.pop("picamera2", None)
    mod = importlib.import_module("picamera2")
    assert mod.__file__.startswith(VCAM)
    monkeypatch.setattr(mod, "CLOCK", "virtual")
    # the source reads the camera's clock, not the machine's: under arm64 emulation a frame takes
    # about a second to decode, the real time between reads looked like dropped frames, and the
    # frames' timestamps fell over a minute behind and were replaced by the time they were read
    monkeypatch.setattr(picam, "now", mod.now)
    yield mod
    sys.modules.pop("picamera2", None)


def phone(seed: int = 1, level: str = "medium", start: float = 0.1, duration: float = 4.0, **fixed) -> phys.Phone:
    ph = phys.Phone(bhyt(random.Random(seed)), start, duration, level, seed)
    for k, v in fixed.items():
        setattr(ph, k, v)
    if "white_nits" in fixed or "dark" in fixed:   # the screen's luminance follows
        ph._pyramid = [(np.where(ph.content < 0, phys.BEZEL_NITS, ph.content * ph.white_nits
                                 + phys.AMBIENT_GLASS_NITS)).astype(np.float32)]
    return ph


def run(vcam, phones, control: str, seconds: float, fps: float = 30, stop_on_read: bool = False):
    """Frames of the virtual camera through the product's source, decoder and loop."""
    vcam.SCENE = vcam.Scene(phones)
    src = Picamera2Source(CameraConfig(source="picamera2", control=control, fps=fps), factory=vcam.Picamera2)
    return drive(src, lambda: vcam._EPOCH[0], seconds, stop_on_read)


def first_read(out, text: str) -> float | None:
    return next((t for t, _, res in out if any(c.text == text for c in res.codes)), None)


@pytest.mark.slow
def test_crop_converges_on_an_off_centre_code_and_follows_it(vcam):
    ph = phone(3, centre_px=np.array([3500.0, 1900.0]), distance=0.3,       # far, bottom right
               drift=[(0.4, 0.0, 1.0, 20.0)])                               # an arm swaying 2 cm
    src, out = run(vcam, [ph], "auto", 2.5)
    assert src.mode.startswith("2304x1296 at 30")    # the mode with the most pixels at [camera] fps
    crops = [(t, f.view.crop) for t, f, _ in out]
    assert crops[0][1] == (0, 0, 4608, 2592)
    late = [(t, c) for t, c in crops if t > 0.8]
    assert late and all(c[2] <= 2 * 1280 for _, c in late)      # zoomed to the binned pixels, 1.8x
    inside = 0
    for t, (x, y, w, h) in late:
        box = ph.code_box(t)                                      # the code's true corners
        inside += bool(box[:, 0].min() >= x and box[:, 0].max() <= x + w and
                       box[:, 1].min() >= y and box[:, 1].max() <= y + h)
    assert inside >= 0.9 * len(late)                              # the crop follows the hand
    assert len({c for _, c in late}) > 1                          # re-aimed as it moved
    assert first_read(out, ph.text) is not None


def test_exposure_lands_two_or_three_frames_later(vcam):
    vcam.SCENE = vcam.Scene([])
    cam = vcam.Picamera2()
    cam.configure(cam.create_video_configuration(lores={"size": (640, 360), "format": "YUV420"}))
    cam.set_controls({"AeEnable": False, "ExposureTime": 5000, "AnalogueGain": 1.0})
    cam.start()
    lands = []
    for _ in range(8):
        before = cam.capture_request().get_metadata()
        assert before["ExposureTime"] in (5000, 9000, 13000)
        new = 9000 if before["ExposureTime"] != 9000 else 13000
        cam.set_controls({"ExposureTime": new})
        for k in range(1, 6):
            meta = cam.capture_request().get_metadata()
            if meta["ExposureTime"] == new:
                lands.append(k)
                break
    assert set(lands) <= {2, 3} and len(lands) == 8


@pytest.mark.slow
def test_exposure_loop_settles_without_oscillating(vcam):
    ph = phone(5, glare=[], tilt_rate=0.0)
    src, out = run(vcam, [ph], "auto", 3.0)
    products = [f.view.exposure_us * f.view.gain for t, f, _ in out if t > 0.6]
    changes = sum(abs(np.log(b / a)) > 0.05 for a, b in zip(products, products[1:]))
    assert changes <= 3
    # the screen's white ends near the target, not clipped, not dim
    t, f, res = out[-1]
    box = ph.code_box(t)
    view = f.view
    frame_box = (box - view.crop[:2]) / view.scale
    x0, y0 = frame_box.min(0).astype(int)
    x1, y1 = frame_box.max(0).astype(int)
    white = np.percentile(f.gray[y0:y1, x0:x1], 85)
    assert 170 < white < 245


GLARE_MM, GLARE_X = (16.0, 12.0), 12.0


def glare_phone() -> phys.Phone:
    # a lamp's reflection 8x the screen's white over the middle of the code, held still
    return phone(11, distance=0.22, glare=[(0.0, 0.0, GLARE_MM[0], GLARE_MM[1], GLARE_X)], tilt_rate=0.0, tilt=[0.1, 0.1],
                 white_nits=200.0)


@pytest.mark.slow
def test_saturating_reflection_reads_through_bracketing_not_fixed(vcam):
    ph = glare_phone()
    _, fixed = run(vcam, [ph], "fixed", 2.5)
    assert first_read(fixed, ph.text) is None
    ph = glare_phone()
    src, auto = run(vcam, [ph], "auto", 2.5)
    assert first_read(auto, ph.text) is not None
    exposures = {f.view.exposure_us for t, f, _ in auto if t > 0.8}
    assert max(exposures) / min(exposures) > 3          # short and normal frames alternate


def test_dim_screen_reads_with_a_longer_exposure(vcam):
    ph = phone(7, white_nits=phys.screen_nits(0.1), glare=[], distance=0.2)   # 10% brightness
    src, out = run(vcam, [ph], "auto", 2.0)
    read = first_read(out, ph.text)
    assert read is not None and read < 1.1
    # once located, metered on its white: longer than the idle cap, and than the camera's own AE
    later = [f.view for t, f, _ in out if read + 0.15 <= t <= read + 0.5]
    assert later and all(v.exposure_us * v.gain > 2 * src.loop.idle_cap for v in later), later


@pytest.mark.slow
def test_back_to_the_whole_field_after_the_phone_leaves_and_idle_stays_there(vcam):
    ph = phone(3, duration=1.2, centre_px=np.array([1200.0, 900.0]), distance=0.28)
    src, out = run(vcam, [ph], "auto", 3.0)
    assert any(f.view.crop != (0, 0, 4608, 2592) for t, f, _ in out if t < 1.3)
    after = [f.view for t, f, _ in out if t > 1.3 + 0.6 + 0.2]
    assert after and all(v.crop == (0, 0, 4608, 2592) for v in after)
    # an idle counter: whole field, auto exposure, nothing commanded
    src, out = run(vcam, [], "auto", 1.0)
    assert all(f.view.crop == (0, 0, 4608, 2592) for _, f, _ in out)
    assert src.loop.crop == (0, 0, 4608, 2592) and src.loop.normal is None


def test_fps_is_set_through_frame_duration_limits(vcam):
    vcam.SCENE = vcam.Scene([])
    src = Picamera2Source(CameraConfig(source="picamera2", fps=20), factory=vcam.Picamera2)
    src.open()
    try:
        meta = src.cam.capture_request().get_metadata()
        assert meta["FrameDuration"] == 50_000                 # not the default 30 fps
        assert src.cam.mode.size == (2304, 1296)              # "fixed": picamera2's choice for 1280x720
    finally:
        src.close()


def test_virtual_camera_raises_on_calls_it_does_not_document(vcam):
    cam = vcam.Picamera2()
    with pytest.raises(NotImplementedError):
        cam.capture_file("x.jpg")
    with pytest.raises(RuntimeError, match="not advertised"):
        cam.set_controls({"FrameRate": 30.0})


@pytest.mark.slow
def test_station_shows_crop_and_exposure_and_dates_the_checkin_at_capture(vcam, tmp_path):
    from datetime import datetime
    import time

    from agent.config import Config
    from agent.feedback import Feedback, NoOutput
    from agent.station import Station

    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    cfg.camera.source, cfg.camera.control = "picamera2", "auto"
    station = Station(cfg, feedback=Feedback(NoOutput()))
    ph = phone(4, centre_px=np.array([1500.0, 1000.0]), distance=0.40)   # read once zoomed
    vcam.SCENE = vcam.Scene([ph])
    src = Picamera2Source(cfg.camera, factory=vcam.Picamera2)
    station.source = src
    src.open()
    try:
        checked_in_from, following, after = None, None, []
        for _ in range(45):
            f = src.read()
            before = checked_in_from is None
            if station.step(f) and station.counters.checkins and checked_in_from is None:
                checked_in_from = time.time() - (time.monotonic() - f.t)   # the frame's wall time
            camera = station.status().camera
            if before and camera.view.crop != [0, 0, 4608, 2592]:     # up to the check-in's frame
                following = (camera, station.snapshot())
            elif not before:
                after.append(camera.view.crop)
    finally:
        src.close()
    assert following is not None, "the crop never followed the code before its check-in"
    camera, snapshot = following
    assert camera.controls.control == "auto" and camera.view.crop != [0, 0, 4608, 2592]
    assert camera.view.exposure_us > 0 and camera.view.gain >= 1.0 and camera.controls.state
    assert snapshot[:2] == b"\xff\xd8"
    # checked in: the loop lets go of the code (controls land 2-3 frames later: the whole field)
    assert after[3:] and all(c == [0, 0, 4608, 2592] for c in after[3:]), str(after)
    row = station.outbox.recent(1)[0]
    assert checked_in_from is not None
    assert abs(datetime.fromisoformat(row.payload["read_at"]).timestamp() - checked_in_from) < 0.05
    station.outbox.close()


def test_status_line_shows_the_crop_and_exposure():
    from agent.admin.status import _view
    from agent.status_types import CameraStatus
    cam = {"source": "picamera2", "crop": [10, 20, 1280, 720], "exposure_us": 8000, "gain": 1.5,
           "control": "auto", "state": "following code"}
    assert _view(CameraStatus.from_dict(cam)) == "; crop 1280x720+10+20, exposure 8000 us, gain 1.5 (auto: following code)"
    assert _view(CameraStatus("v4l2")) == ""


def test_a_whole_code_located_but_unread_is_zoomed_onto_not_the_textured_patch_around_it():
    # a far code zxing-cpp located with its version (65 modules) but cannot read at 2.6 px a module,
    # on a phone whose text and glare make the textured patch around it 3x the code: the crop is
    # set from the code (as for a read code), not widened to the patch (which gave no zoom at all)
    from agent.capture.steer import FILL, CaptureLoop, textured_box
    from agent.capture.view import View, whole_codes
    rng = np.random.default_rng(0)
    gray = np.full((720, 1280), 60, np.uint8)
    gray[200:500, 300:780] = rng.integers(0, 255, (300, 480), dtype=np.uint8)   # the textured phone
    code = np.array([[500.0, 260.0], [670.0, 260.0], [670.0, 430.0], [500.0, 430.0]])
    patch = textured_box(gray)
    assert patch is not None and np.ptp(patch[:, 0]) > 2.5 * 170            # the patch dwarfs the code
    view = View((0, 0, 4608, 2592), (1280, 720))
    assert [len(w) for w in whole_codes([(code, 65), (code / 2, 17), (code, None)])] == [4]
    loop = CaptureLoop((4608, 2592), (1280, 720))
    controls = loop.update(0.0, gray, view, Seen([], [code], whole=whole_codes([(code, 65)])), True)
    x, y, w, h = controls["ScalerCrop"]
    assert h == pytest.approx(170 * 3.6 / FILL, rel=0.05)                     # the code fills FILL of it
    box = view.to_array(code)
    assert x < box[:, 0].min() and box[:, 0].max() < x + w and y < box[:, 1].min() and box[:, 1].max() < y + h
    # a candidate without a version read (possibly a part of a code) still takes the patch's extent
    loop = CaptureLoop((4608, 2592), (1280, 720))
    controls = loop.update(0.0, gray, view, Seen([], [code]), True)
    assert controls.get("ScalerCrop", (0, 0, 4608, 2592))[2] > 2 * w


class Bench:
    """A camera reduced to what the bracket cycle sees, no rendering: a code of light and dark
    modules under a lamp's reflection `glare` times its white, exposed at the product of the
    controls in effect, which land `latency` frames after they are set (a callable: per request),
    tone-mapped as the ISP does. Enough to drive CaptureLoop.update frame by frame, fast."""

    BOX = np.array([[440.0, 160.0], [840.0, 160.0], [840.0, 560.0], [440.0, 560.0]])   # stream px

    def __init__(self, glare: float, latency, product: float = 10_000.0):
        yy, xx = np.mgrid[0:720, 0:1280]
        modules = ((xx // 10 + yy // 10 * 7) % 3 == 0)
        inside = (xx >= 440) & (xx < 840) & (yy >= 160) & (yy < 560)
        self.radiance = np.where(inside, np.where(modules, 0.02, 1.0), 0.3)              # white = 1
        self.radiance = self.radiance + glare * np.exp(-(((xx - 520) / 30.0) ** 2 + ((yy - 240) / 25.0) ** 2))
        self.latency, self.product, self.pending, self.seq = latency, product, [], 0

    def frame(self):
        from agent.capture.view import View
        self.seq += 1
        for at, c in [p for p in self.pending if p[0] <= self.seq]:
            if "ExposureTime" in c:
                self.product = c["ExposureTime"] * c.get("AnalogueGain", 1.0)
        self.pending = [p for p in self.pending if p[0] > self.seq]
        linear = np.clip(self.radiance * self.product * 3e-5, 0, 1)      # white at 0.3 at 10 000
        gray = (255 * linear ** (1 / 2.2)).astype(np.uint8)
        return gray, View((0, 0, 4608, 2592), (1280, 720), int(self.product), 1.0)

    def set(self, controls: dict) -> None:
        self.pending.append((self.seq + self.latency(), dict(controls)))


def bracket_run(glare: float, latency, frames: int = 60):
    from agent.capture.steer import CaptureLoop
    cam, loop = Bench(glare, latency), CaptureLoop((4608, 2592), (1280, 720))
    products, clipped = [], []
    for i in range(frames):
        gray, view = cam.frame()
        products.append(view.exposure_us * view.gain)
        clipped.append(int((gray >= 250).sum()))
        cam.set(loop.update(i / 14, gray, view, Seen([], [Bench.BOX]), True)) if i >= 0 else None
    return loop, np.array(products[20:]), np.array(clipped[20:])


@pytest.mark.parametrize("latency", [lambda: 1, lambda: 2, lambda: 3, lambda: random.choice((2, 3)),
                                     lambda: random.choice((1, 2, 3, 4))], ids=["1", "2", "3", "2-3", "1-4"])
def test_short_and_normal_frames_alternate_whatever_the_control_latency(latency):
    # the cycle follows what each frame got: a short exposure is never cancelled by the normal
    # one asked a frame later landing on the same frame, and never sticks
    random.seed(1)
    loop, products, _ = bracket_run(glare=6.0, latency=latency)
    normal = loop.normal
    short = products < normal / 2.5
    assert 0.2 < short.mean() < 0.6                                 # a short run in every cycle
    runs = np.diff(np.flatnonzero(np.diff(short.astype(int)) == 1))
    assert runs.size >= 3 and runs.max() <= 12                       # and the cycle keeps turning
    assert np.all(np.abs(np.log(products[~short] / normal)) < 0.2)   # the normal exposure holds


def test_a_short_frame_still_clipped_asks_for_a_deeper_one():
    # a reflection 20x the screen's white: at 1/12 of the normal exposure it still clips, so the
    # short frames go deeper until it does not (the modules under it are then in range)
    random.seed(2)
    loop, products, clipped = bracket_run(glare=20.0, latency=lambda: random.choice((2, 3)), frames=80)
    short = products < loop.normal / 2.5
    assert loop.depth >= 24
    assert clipped[~short].min() > 500                                # the normal frames clip
    assert clipped[short][-3:].max() == 0                             # the deep short ones do not
    # a weak reflection (3x) is out of saturation at the first depth: no deeper
    loop, _, _ = bracket_run(glare=3.0, latency=lambda: 2)
    assert loop.depth == 12


@pytest.mark.slow
def test_a_reflection_over_a_finder_held_still_reads_on_the_short_frames(vcam):
    # a lamp's reflection (12x the screen's white) over the bottom-left finder pattern, held still:
    # zxing-cpp does not locate the code in any normal frame and "fixed" never reads it; the short
    # frames of the bracket, levelled, do
    def ph():
        return phone(26, level="medium", tilt_rate=0.0)     # 15 cm, 106 cd/m2, the reflection 12.4x
    first = ph()
    _, fixed = run(vcam, [first], "fixed", 2.0)
    assert first_read(fixed, first.text) is None
    second = ph()
    _, auto = run(vcam, [second], "auto", 2.0)
    read = first_read(auto, second.text)
    assert read is not None and read < 1.2
    t, f, _ = next((t, f, r) for t, f, r in auto if t == read)
    assert f.view.exposure_us * f.view.gain < 0.2 * max(g.view.exposure_us * g.view.gain for _, g, _ in auto)



def test_an_unread_code_located_in_parts_is_framed_whole_not_one_part():
    # two reflections split a code zxing-cpp cannot read into two located parts: the crop is
    # centred on both (centred on the larger alone, it cut the rest of the code off: a far code on
    # a dim screen under two reflections read at 1.93 s, 0.53 s with this); a candidate far away
    # (another phone, a pattern on the counter) is not framed with them
    from agent.capture.steer import CaptureLoop
    from agent.capture.view import View
    gray = np.full((720, 1280), 60, np.uint8)
    upper = np.array([[250.0, 150.0], [350.0, 150.0], [350.0, 250.0], [250.0, 250.0]])
    lower = np.array([[335.0, 245.0], [425.0, 245.0], [425.0, 335.0], [335.0, 335.0]])
    far = upper + (700.0, 350.0)
    view = View((1000, 800, 2304, 1296), (1280, 720))              # already zoomed 2x
    loop = CaptureLoop((4608, 2592), (1280, 720))
    loop.crop = view.crop
    x, y, w, h = loop.update(0.0, gray, view, Seen([], [upper, lower, far]), True)["ScalerCrop"]
    both = view.to_array(np.vstack([upper, lower]))
    centre = (both.min(0) + both.max(0)) / 2
    assert abs(x + w / 2 - centre[0]) < 8 and abs(y + h / 2 - centre[1]) < 8


def test_no_exposure_metadata_or_a_stale_box_never_upsets_the_exposure():
    from agent.capture.steer import CaptureLoop
    from agent.capture.view import View
    # a webcam that does not report its exposure (0) showing a clipped screen: a probe, no error
    loop = CaptureLoop((1920, 1080), (1280, 720), frame_us=33_333)
    loop.max_gain = 1.0
    white = np.full((720, 1280), 255, np.uint8)
    controls = loop.update(0.0, white, View((0, 0, 1920, 1080), (1280, 720), 0, 1.0), Seen([], [Bench.BOX]), True)
    assert controls["ExposureTime"] > 0 and loop.normal > 0
    # never more than the camera can give: a dim screen on a webcam (exposure time alone)
    dim = np.where(np.indices((720, 1280)).sum(0) % 20 < 10, 12, 2).astype(np.uint8)
    loop.update(0.1, dim, View((0, 0, 1920, 1080), (1280, 720), 30_000, 1.0), Seen([], [Bench.BOX]), True)
    assert loop.normal <= 33_333
    # the code briefly not located: the box it was in is not metered for the normal exposure
    cam, loop = Bench(glare=0.0, latency=lambda: 2), CaptureLoop((4608, 2592), (1280, 720))
    for i in range(8):
        gray, view = cam.frame()
        cam.set(loop.update(i / 14, gray, view, Seen([], [Bench.BOX]), True))
    normal = loop.normal
    loop.update(8 / 14, np.full((720, 1280), 255, np.uint8), view, Seen([], []), True)   # a lamp where it was
    assert loop.normal == normal


def test_a_handled_code_lets_go_of_the_crop_and_never_wins_it_again():
    # the loop follows a code until the station has handled it; then the whole field at once, and
    # that code (read, located or a textured patch at its place, moving with the hand) never wins
    # the crop again while in view; a candidate elsewhere does; once gone, it is forgotten
    from agent.capture.steer import HANDLED_FORGET_S, CaptureLoop
    from agent.capture.view import View
    rng = np.random.default_rng(0)
    gray = np.full((720, 1280), 60, np.uint8)
    gray[60:260, 80:280] = rng.integers(0, 255, (200, 200), dtype=np.uint8)        # the sticker
    sticker = np.array([[100.0, 80.0], [260.0, 80.0], [260.0, 240.0], [100.0, 240.0]])
    full = View((0, 0, 4608, 2592), (1280, 720))
    loop = CaptureLoop((4608, 2592), (1280, 720))
    crop = loop.update(0.0, gray, full, Seen([sticker], []), True)["ScalerCrop"]    # read: followed
    zoomed = View(crop, (1280, 720))
    inside = zoomed.from_array(full.to_array(sticker))
    assert loop.update(0.05, gray, zoomed, Seen([inside], []), True).get("ScalerCrop", crop) != full.crop
    # handled: the whole field now, not LOST_S later
    assert loop.update(0.1, gray, zoomed, Seen([], [], handled=[inside]), True)["ScalerCrop"] == full.crop
    for i in range(30):       # in view for 1.5 s: read, located or only its texture, swaying a little
        t, moved = 0.15 + 0.05 * i, sticker + (i % 5, -(i % 3))
        controls = loop.update(t, gray, full, Seen([], [moved] if i % 3 == 1 else [], whole=[moved] if i % 3 == 2 else [], handled=[moved] if i % 3 == 0 else []), True)
        assert controls.get("ScalerCrop", full.crop) == full.crop, (i, controls)
    # a patient elsewhere, located while the sticker is still read: the crop goes to the patient
    patient = np.array([[800.0, 400.0], [900.0, 400.0], [900.0, 500.0], [800.0, 500.0]])
    controls = loop.update(1.7, gray, full, Seen([], [patient], whole=[patient], handled=[sticker]), True)
    x, y, w, h = controls["ScalerCrop"]
    px = full.to_array(patient)
    assert x < px[:, 0].min() and px[:, 0].max() < x + w and y < px[:, 1].min() and px[:, 1].max() < y + h
    # the sticker gone for longer than HANDLED_FORGET_S: a code shown there may win the crop again
    loop = CaptureLoop((4608, 2592), (1280, 720))
    loop.update(0.0, gray, full, Seen([], [], handled=[sticker]), True)
    assert loop.update(0.1, gray, full, Seen([], [sticker], whole=[sticker]), True).get("ScalerCrop") is None
    later = 0.1 + HANDLED_FORGET_S + 0.1
    assert "ScalerCrop" in loop.update(later, gray, full, Seen([], [sticker], whole=[sticker]), True)


@pytest.mark.slow
def test_a_non_card_code_held_in_a_corner_does_not_keep_patients_out_of_view(vcam):
    # an audit's scene: a readable QR that is not a card (a sticker, a bystander's phone) held in a
    # corner all along, and four patients presented elsewhere: each is read within 2 s
    from agent.checkin import Presenter
    sticker = phys.Phone("https://example.vn/wifi?ssid=benhvien", 0.0, 30.0, "medium", 11)
    sticker.centre_px, sticker.distance, sticker.glare = np.array([700.0, 650.0]), 0.2, []
    patients = [phone(20 + k, start=1.5 + 4.5 * k, duration=3.0, glare=[], distance=0.24,
                      centre_px=np.array([2600.0 + 300 * (k % 2), 1500.0])) for k in range(4)]
    vcam.SCENE = vcam.Scene([sticker] + patients)
    # 15 fps: half the frames to render and decode, so that a loaded test machine stays within the
    # minute the source accepts the virtual camera's timestamps in (19.5 s of scene)
    src = Picamera2Source(CameraConfig(source="picamera2", control="auto", fps=15), factory=vcam.Picamera2)
    _, out = drive(src, lambda: vcam._EPOCH[0], 1.5 + 4.5 * 4, presenter=Presenter())
    assert first_read(out, sticker.text) is not None and first_read(out, sticker.text) < 1.5
    late = [(k, first_read(out, p.text)) for k, p in enumerate(patients)]
    assert all(r is not None and r - p.start <= 2.0 for (k, r), p in zip(late, patients)), late


@pytest.mark.slow
def test_auto_exposure_resumes_between_patients_on_a_camera_that_keeps_set_values(vcam, monkeypatch):
    # a camera that keeps applying a set ExposureTime and AnalogueGain until they are cleared (the
    # second virtual camera, like libcamera): after a phone read through bracketing, the last short
    # exposure (1/12 of the screen's) stayed on the empty counter and on the next patient's dim
    # screen, which was never read; now the camera's own auto exposure takes over between patients
    monkeypatch.setattr(vcam, "MANUAL_HOLDS", True)
    glare = glare_phone()
    glare.start, glare.duration = 0.1, 2.5
    dim = phone(6, start=4.0, duration=3.0, centre_px=np.array([2000.0, 1200.0]), distance=0.2,
                white_nits=7.0, glare=[])                                   # a 10 % slider
    vcam.SCENE = vcam.Scene([glare, dim])
    src = Picamera2Source(CameraConfig(source="picamera2", control="auto", fps=30), factory=vcam.Picamera2)
    _, out = drive(src, lambda: vcam._EPOCH[0], 6.5, presenter=Presenter())
    assert first_read(out, glare.text) is not None
    asked = [f.view.exposure_us for t, f, _ in out if t < 1.0]
    counter = [f.view.exposure_us for t, f, _ in out if 3.0 < t < 3.9]      # the empty counter
    assert min(asked) < 2000 and min(counter) > 4 * min(asked), (asked, counter)
    read = first_read(out, dim.text)
    assert read is not None and read - dim.start <= 1.0, read


def test_autofocus_meters_on_the_code_it_follows_and_goes_back_to_its_own_window():
    # the default AF window is the middle of the field; an off-centre phone is focused on its code
    from agent.capture.steer import AF_METERING_AUTO, AF_METERING_WINDOWS, CaptureLoop
    from agent.capture.view import View
    gray = np.full((720, 1280), 60, np.uint8)
    full = View((0, 0, 4608, 2592), (1280, 720))
    code = np.array([[1000.0, 500.0], [1100.0, 500.0], [1100.0, 600.0], [1000.0, 600.0]])   # bottom right
    loop = CaptureLoop((4608, 2592), (1280, 720))
    controls = loop.update(0.0, gray, full, Seen([], [code], whole=[code]), True)
    assert controls["AfMetering"] == AF_METERING_WINDOWS
    (x, y, w, h), = controls["AfWindows"]
    box = full.to_array(code)
    assert (x, y) == pytest.approx(tuple(box.min(0)), abs=1) and (x + w, y + h) == pytest.approx(tuple(box.max(0)), abs=2)
    # the hand's sway moves it a little: the window stays; a larger move: it follows
    zoomed = View(controls["ScalerCrop"], (1280, 720))
    assert "AfWindows" not in loop.update(0.05, gray, zoomed, Seen([], [zoomed.from_array(box + 5)]), True)
    moved = loop.update(0.1, gray, zoomed, Seen([], [zoomed.from_array(box + 150)]), True)
    assert moved["AfWindows"][0][0] == pytest.approx(x + 150, abs=1)
    # the scene goes idle: the camera's own AF window again
    assert loop.update(0.2, gray, full, Seen(), False)["AfMetering"] == AF_METERING_AUTO


class BandedBench(Bench):
    """Bench under a lamp on 50 Hz mains: at a bracket's sub-millisecond exposure the rolling shutter
    reads its 100 Hz pulses as horizontal bands over the lamp's reflection (rows up to twice its mean
    light, IEEE 1789's full-modulation LED), in every other short frame here (the bands' phase moves
    from frame to frame)."""

    def __init__(self, glare: float, latency):
        super().__init__(0.0, latency)
        yy, xx = np.mgrid[0:720, 0:1280]
        self.lamp = glare * np.exp(-(((xx - 520) / 30.0) ** 2 + ((yy - 240) / 25.0) ** 2))
        self.bands = 1.0 + np.sin(2 * np.pi * yy / 40.0)             # 0 to 2x the mean, row by row
        self.screen, self.shorts = self.radiance, 0

    def frame(self):
        due = [c for at, c in self.pending if at <= self.seq + 1 and "ExposureTime" in c]
        product = due[-1]["ExposureTime"] * due[-1].get("AnalogueGain", 1.0) if due else self.product
        short = product < 10_000.0 / 4               # the normal exposure is 2x that, short ones 1/12
        self.shorts += short
        banded = short and self.shorts % 2 == 0
        self.radiance = self.screen + self.lamp * (self.bands if banded else 1.0)
        return super().frame()


def test_one_banded_short_frame_does_not_deepen_the_bracket():
    # a reflection 12x the screen's white is out of saturation at 1/12 of the normal exposure; the
    # bright rows of a banded short frame clip: not a reason to go deeper (the next frame is not
    # banded there); a reflection that clips in every short frame still deepens the bracket
    from agent.capture.steer import BRACKET, CaptureLoop
    cam, loop = BandedBench(12.0, lambda: 2), CaptureLoop((4608, 2592), (1280, 720))
    clipped = []
    for i in range(80):
        gray, view = cam.frame()
        if loop.is_short(view):
            clipped.append(int((gray[160:560, 440:840] >= 250).sum()))
        cam.set(loop.update(i / 14, gray, view, Seen([], [Bench.BOX]), True))
    assert cam.shorts >= 8 and max(clipped) > 0 and min(clipped) == 0     # banded frames clipped, others not
    assert loop.depth == BRACKET
    loop, _, _ = bracket_run(glare=20.0, latency=lambda: 2, frames=80)
    assert loop.depth > BRACKET


def test_a_code_followed_without_a_read_widens_back_to_the_whole_field():
    # the box a crop was set on may be a part of the code, or a tilted code's corner may lie outside
    # it: after UNREAD_HOLD_S the crop widens, twice as wide every UNREAD_WIDEN_S, to the whole field
    from agent.capture.steer import UNREAD_HOLD_S, UNREAD_WIDEN_S, CaptureLoop
    from agent.capture.view import View
    gray = np.full((720, 1280), 60, np.uint8)
    full = View((0, 0, 4608, 2592), (1280, 720))
    code = np.array([[600.0, 300.0], [700.0, 300.0], [700.0, 400.0], [600.0, 400.0]])
    loop = CaptureLoop((4608, 2592), (1280, 720))
    crop, widths, t = loop.update(0.0, gray, full, Seen([], [code], whole=[code]), True)["ScalerCrop"], [], 0.0
    box = full.to_array(code)
    while t < UNREAD_HOLD_S + 3 * UNREAD_WIDEN_S:
        t += 1 / 30
        view = View(crop, (1280, 720))
        crop = loop.update(t, gray, view, Seen([], [view.from_array(box)], whole=[view.from_array(box)]), True
                           ).get("ScalerCrop", crop)
        widths.append((t, crop[2]))
    held = [w for t, w in widths if t < UNREAD_HOLD_S]
    assert len(set(held)) == 1 and held[0] < 4608 / 2               # zoomed, and held while it may read
    assert all(a <= b for (_, a), (_, b) in zip(widths, widths[1:])), widths  # then only wider
    assert widths[-1][1] == 4608                                     # the whole field
    # read in the meantime: the station lets go of it (the let-go test), nothing to widen


@pytest.mark.slow
def test_nothing_located_the_auto_frames_are_the_fixed_views(vcam):
    # the counter with nothing located on it: auto's frames are fixed's (the same sensor mode and
    # frame rate, the whole field, the camera's own auto exposure)
    views = {}
    for control in ("fixed", "auto"):
        vcam.SCENE = vcam.Scene([])
        src = Picamera2Source(CameraConfig(source="picamera2", control=control, fps=30), factory=vcam.Picamera2)
        _, out = drive(src, lambda: vcam._EPOCH[0], 3.0, presenter=Presenter())
        views[control] = (src.mode, [f.view for _, f, _ in out], [t for t, _, _ in out])
    (_, fviews, ft), (amode, aviews, at) = views["fixed"], views["auto"]
    assert amode == "2304x1296 at 30 fps" and len(at) == len(ft)      # the mode "fixed" gets for 1280x720
    assert np.allclose(np.diff(at), 1 / 30, atol=1e-3)                 # 30 fps, not the full mode's 14
    assert all(v.crop == (0, 0, 4608, 2592) for v in aviews)
    # the camera's own AE, but never longer than the idle cap (IDLE_BRIGHTEST_NITS): the same until
    # the AE goes over it, then the cap; on this counter (15-90 cd/m^2) the AE settles above it
    cap = src.loop.idle_cap
    fp, ap = [v.exposure_us * v.gain for v in fviews], [v.exposure_us * v.gain for v in aviews]
    first = next(i for i, p in enumerate(fp) if p > cap * CAP_MARGIN)
    assert ap[:first + 1] == fp[:first + 1]          # the cap is asked after a frame over it
    assert all(a <= f for a, f in zip(ap, fp)) and fp[-1] > 1.5 * cap
    assert ap[-30:] == [pytest.approx(cap, rel=0.01)] * 30


def dark_counter(monkeypatch, factor: float = 0.1) -> None:
    """The counter's luminance times `factor` (the virtual camera's default is 15-90 cd/m^2; a dark
    top of 10 % reflectance under 150 lux is about 5): the AE exposes it several times longer."""
    real = phys.Counter

    class Dark(real):
        def __init__(self, seed: int = 0):
            super().__init__(seed)
            self.nits = self.nits * np.float32(factor)

    monkeypatch.setattr(phys, "Counter", Dark)


def test_a_bright_phone_after_a_dark_counter_is_located_at_once_not_after_the_ae_settles(vcam, monkeypatch):
    # the AE exposes a dark empty counter (1.5-9 cd/m^2) for 30 ms and more; a 600 cd/m^2 screen then
    # arrives some 20x over full scale, white, and was located only once the AE had come down
    # (here 0.97 s; 0.3-1.3 s on the second camera). The idle cap keeps the exposure at what suits
    # screens: read as soon as the phone has slid into view (0.25 s).
    dark_counter(monkeypatch)
    ph = phone(10, start=1.0, duration=2.0, white_nits=600.0, glare=[], distance=0.24,
               centre_px=np.array([2100.0, 1250.0]))
    src, out = run(vcam, [ph], "auto", 1.6)
    idle = [f.view for t, f, _ in out if 0.6 < t < 1.0]
    assert idle and all(v.exposure_us * v.gain <= 1.25 * src.loop.idle_cap for v in idle), idle
    read = first_read(out, ph.text)
    assert read is not None and read - ph.start <= 0.5, read


def test_the_idle_cap_gives_way_to_the_cameras_ae_in_a_bright_room_and_is_off_for_unknown_sensors(vcam, monkeypatch):
    from agent.capture.steer import idle_cap_for

    assert idle_cap_for("imx708") == pytest.approx(5.0e6 / 650) and idle_cap_for("ov5647") is None
    # a bright counter (3x the default: 45-270 cd/m^2): the camera's own AE exposes below the cap,
    # and is left alone (a capped exposure would be the longer one)
    dark_counter(monkeypatch, factor=3.0)
    src, out = run(vcam, [], "auto", 1.0)
    late = [f.view for t, f, _ in out if t > 0.6]
    assert late and all(v.exposure_us * v.gain < src.loop.idle_cap for v in late)
    assert src.loop._capped is False
