"""USB webcams (agent/capture/v4l2.py) with `control = "auto"`: no webcam here, so a stand-in for
OpenCV's VideoCapture honours or refuses properties as a UVC webcam does through the V4L2 backend,
and renders its frames with the virtual camera's physics (agent/sim/camera.py). The decoder, the
loop (agent/capture/steer.py) and OpenCV's image work are the real ones."""

from __future__ import annotations

import logging
import random
import re

import cv2
import numpy as np
import pytest

from agent.capture import v4l2
from agent.capture.v4l2 import V4l2Source, output_size
from agent.config import CameraConfig
from agent.decode import FrameReader
from agent.sim import camera as phys
from agent.sim.payloads import bhyt
from agent.sim.webcam import UVC_1080, Webcam
from support.steering import drive


def phone(seed: int = 1, start: float = 0.1, duration: float = 4.0, **fixed) -> phys.Phone:
    ph = phys.Phone(bhyt(random.Random(seed)), start, duration, "medium", seed)
    for k, v in fixed.items():
        setattr(ph, k, v)
    return ph


def run(cam: Webcam, control: str, seconds: float):
    src = V4l2Source(CameraConfig(source="v4l2", control=control), factory=lambda device: cam)
    return drive(src, lambda: cam.epoch, seconds)


def to_webcam(box: np.ndarray, cam: Webcam) -> np.ndarray:
    return box * (cam.size[0] / phys.ARRAY[0])


def test_auto_takes_the_largest_mode_that_holds_15_fps(caplog):
    cam = Webcam(UVC_1080)
    caplog.set_level(logging.INFO, logger="agent.capture.v4l2")
    src = V4l2Source(CameraConfig(source="v4l2", control="auto"), factory=lambda device: cam)
    src.open()
    # 4K only at 5 fps: 1920x1080 in MJPG (YUYV holds only 5 fps there)
    assert (cam.size, cam.fourcc, cam.fps) == ((1920, 1080), "MJPG", 30)
    assert src.mode == "1920x1080 MJPG at 30 fps" and "1920x1080 MJPG at 30 fps" in caplog.text
    f = src.read()
    assert f.gray.shape == (720, 1280) and f.view.crop == (0, 0, 1920, 1080)    # the whole field, scaled
    assert abs(f.t - (cam.epoch + 1 / 30)) < 1e-6                               # the buffer's time
    src.close()
    assert cam.released


def test_auto_on_a_yuyv_only_webcam_and_one_too_slow_for_15_fps():
    cam = Webcam({("YUYV", (1920, 1080)): 5, ("YUYV", (1280, 720)): 10, ("YUYV", (640, 480)): 30})
    src = V4l2Source(CameraConfig(source="v4l2", control="auto"), factory=lambda device: cam)
    src.open()
    assert (cam.size, cam.fourcc) == ((640, 480), "YUYV") and src.loop is not None
    assert src.read().gray.shape == (480, 640)
    slow = Webcam({("YUYV", (1280, 720)): 10, ("MJPG", (1280, 720)): 10})
    src = V4l2Source(CameraConfig(source="v4l2", control="auto"), factory=lambda device: slow)
    src.open()
    assert src.loop is None and (slow.size, slow.fourcc) == ((1280, 720), "YUYV")   # as "fixed"
    assert src.read().view is None


def test_auto_keeps_uncompressed_yuyv_where_it_holds_15_fps():
    cam = Webcam({("MJPG", (1280, 720)): 30, ("YUYV", (1280, 720)): 15, ("YUYV", (640, 480)): 30})
    src = V4l2Source(CameraConfig(source="v4l2", control="auto"), factory=lambda device: cam)
    src.open()
    assert (cam.size, cam.fourcc, cam.fps) == ((1280, 720), "YUYV", 15) and src.mode == "1280x720 YUYV at 15 fps"


def test_exposure_clamped_by_the_webcam_is_what_frames_get_and_an_ignored_one_is_refused(caplog):
    cam = Webcam(UVC_1080, max_units=333)                      # exposure_time_absolute 3..333
    cam.set(cv2.CAP_PROP_FPS, 5)
    ctl = v4l2.ExposureControl(cam, 200_000)
    assert ctl.label(1) == (10000, True)                       # automatic: the webcam's own
    assert ctl.apply({"AeEnable": False, "ExposureTime": 50000, "AnalogueGain": 1.0}, 1)
    # taken to land 2 frames later, as clamped; frames 2-4 might have either (latency 1-3)
    assert [ctl.label(i) for i in (2, 3, 4, 5)] == [(10000, False), (33300, False), (33300, True), (33300, True)]
    for i, us in enumerate((60000, 70000, 80000, 5000, 90000, 100000), start=4):   # at the clamp, then short
        assert ctl.apply({"AeEnable": False, "ExposureTime": us, "AnalogueGain": 1.0}, i)
    assert not ctl.refused and cam.ae == v4l2.AE_MANUAL
    assert ctl.apply({"AeEnable": True}, 10) and cam.ae == v4l2.AE_APERTURE_PRIORITY
    stuck = Webcam(UVC_1080, manual="time ignored")
    ctl = v4l2.ExposureControl(stuck, 66_000)
    results = [ctl.apply({"AeEnable": False, "ExposureTime": us, "AnalogueGain": 1.0}, i)
               for i, us in enumerate((5000, 9000, 13000, 17000))]
    assert results == [True, True, False, False]               # refused on the third (both sides), and stays so
    assert ctl.refused.startswith("exposure_time_absolute stays") and stuck.ae == v4l2.AE_APERTURE_PRIORITY
    assert caplog.text.count("refused manual exposure") == 1


def test_fixed_mode_is_unchanged():
    cam = Webcam(UVC_1080, [phone(2, centre_px=np.array([3000.0, 1700.0]), distance=0.22)])
    src = V4l2Source(CameraConfig(source="v4l2", control="fixed", fps=30), factory=lambda device: cam)
    src.open()
    assert [(p, v) for p, v, _ in cam.sets] == [(cv2.CAP_PROP_FRAME_WIDTH, 1280), (cv2.CAP_PROP_FRAME_HEIGHT, 720),
                                                (cv2.CAP_PROP_FPS, 30), (cv2.CAP_PROP_BUFFERSIZE, 1)]
    reader = FrameReader()
    for _ in range(6):
        f = src.read()
        assert f.gray.shape == (720, 1280) and f.view is None
        src.steer(f, reader.read(f.gray), True)
    assert len(cam.sets) == 4                                 # nothing steered
    assert src.control_status().to_dict() == {"control": "fixed", "mode": "1280x720 YUYV at 10 fps", "state": "fixed"}
    src.close()


def test_output_size_native_pixels_in_a_crop_the_stream_size_for_the_whole_field():
    assert output_size((0, 0, 1920, 1080), (1280, 720)) == (1280, 720)
    assert output_size((300, 200, 1280, 720), (1280, 720)) == (1280, 720)
    assert output_size((300, 200, 1000, 562), (1280, 720)) == (1000, 562)   # never scaled up
    w, h = output_size((0, 0, 2592, 1944), (1280, 720))                     # a 4:3 webcam: its aspect
    assert abs(w / h - 4 / 3) < 0.01 and abs(w * h - 1280 * 720) < 2000


@pytest.mark.slow
def test_crop_converges_on_an_off_centre_code_exposure_lands_and_all_returns_when_it_leaves(caplog):
    ph = phone(3, duration=1.9, centre_px=np.array([3500.0, 1900.0]), distance=0.3,     # far, bottom right
               drift=[(0.4, 0.0, 1.0, 20.0)])                                        # an arm swaying 2 cm
    cam = Webcam(UVC_1080, [ph])
    _, out = run(cam, "auto", 3.0)
    during = [(t, f) for t, f, _ in out if 0.8 < t < 2.0]
    assert during and all(f.view.crop != (0, 0, 1920, 1080) for _, f in during)
    inside = 0
    for t, f in during:
        x, y, w, h = f.view.crop
        box = to_webcam(ph.code_box(t), cam)
        assert w < 1920 and f.gray.shape == output_size((x, y, w, h), (1280, 720))[::-1]
        inside += bool(box[:, 0].min() >= x and box[:, 0].max() <= x + w and
                       box[:, 1].min() >= y and box[:, 1].max() <= y + h)
    assert inside >= 0.9 * len(during)
    assert len({f.view.crop for _, f in during}) > 1          # re-aimed as the arm swayed
    assert any(c.text == ph.text for _, _, res in out for c in res.codes)
    # manual exposure metered on the screen; each frame says the exposure it was really taken with
    assert any(p == cv2.CAP_PROP_AUTO_EXPOSURE and v == v4l2.AE_MANUAL and ok for p, v, ok in cam.sets)
    labels = [f.view.exposure_us for _, f, _ in out]
    manual = [(label, us) for label, (us, is_manual) in zip(labels, cam.used) if is_manual]
    assert len(manual) > 30 and all(abs(label - us) < 100 for label, us in manual)   # V4L2: 100 us units
    # a lamp's reflection (16x the screen's white) clips modules: short and normal frames alternate,
    # and the normal exposure holds still (no oscillation)
    assert ph.glare and max(labels) / min(x for x in labels if x) > 3
    settled = [(t, f) for t, f in during if t > 1.2]
    normal = [f.view.exposure_us for _, f in settled if f.view.exposure_us > 2 * min(labels)]
    assert sum(abs(np.log(b / a)) > 0.05 for a, b in zip(normal, normal[1:])) <= 2
    assert len(normal) < len(settled)                            # some frames were the short ones
    t, f = next((t, f) for t, f in reversed(settled) if f.view.exposure_us > 2 * min(labels))
    x, y, _, _ = f.view.crop
    bx = to_webcam(ph.code_box(t), cam) - (x, y)
    (x0, y0), (x1, y1) = bx.min(0).astype(int), bx.max(0).astype(int)
    assert 150 < np.percentile(f.gray[y0:y1, x0:x1], 85) < 245
    # the phone left at 2.0 s: the whole field and the webcam's own exposure again
    after = [f for t, f, _ in out if t > 2.0 + 0.6 + 0.15]
    assert after and all(f.view.crop == (0, 0, 1920, 1080) for f in after)
    assert cam.ae == v4l2.AE_APERTURE_PRIORITY and "refused" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("manual", ["absent", "ignored"])
def test_a_webcam_without_manual_exposure_keeps_its_own_and_says_so_once(manual, caplog):
    ph = phone(3, duration=1.9, centre_px=np.array([3400.0, 1800.0]), distance=0.26)
    cam = Webcam(UVC_1080, [ph], manual=manual)
    src, out = run(cam, "auto", 1.6)
    assert caplog.text.count("refused manual exposure") == 1
    status = src.control_status()
    assert status.exposure_control.startswith("refused: no manual exposure")
    assert "exposure: the webcam's own" in status.state
    assert cam.ae == v4l2.AE_APERTURE_PRIORITY
    assert not any(p == cv2.CAP_PROP_EXPOSURE for p, _, _ in cam.sets)
    # the crop still works, and the code reads
    assert any(f.view.crop != (0, 0, 1920, 1080) for t, f, _ in out if t > 0.8)
    assert any(c.text == ph.text for _, _, res in out for c in res.codes)
    assert src.loop.normal is None                           # no metering on a refused control
    if manual == "absent":                                   # no exposure time to show, none asked for
        assert all(f.view.exposure_us == 0 for _, f, _ in out)


@pytest.mark.slow
def test_a_dim_screen_gets_a_longer_exposure_than_the_room_and_reads():
    ph = phone(7, glare=[], distance=0.2)
    ph.white_nits = phys.screen_nits(0.1)                       # 10% brightness: 7 cd/m^2
    ph._pyramid = [(np.where(ph.content < 0, phys.BEZEL_NITS, ph.content * ph.white_nits
                             + phys.AMBIENT_GLASS_NITS)).astype(np.float32)]
    cam = Webcam(UVC_1080, [ph])
    _, out = run(cam, "auto", 1.5)
    room = max(f.view.exposure_us for t, f, _ in out if t < 0.1)  # the webcam's AE on the counter
    assert any(c.text == ph.text for _, _, res in out for c in res.codes)
    late = [f.view.exposure_us for t, f, _ in out if t > 1.0]
    assert min(late) > 1.5 * room
    assert cam.ae == v4l2.AE_APERTURE_PRIORITY                 # close() leaves the webcam on its own AE


@pytest.mark.slow
def test_status_and_snapshot_show_the_webcams_crop_and_exposure(tmp_path):
    from agent.admin.status import _view
    from agent.config import Config
    from agent.feedback import Feedback, NoOutput
    from agent.station import Station

    cfg = Config()
    cfg.station.state_dir = str(tmp_path / "state")
    cfg.feedback.backend = "none"
    cfg.camera.source, cfg.camera.control = "v4l2", "auto"
    station = Station(cfg, feedback=Feedback(NoOutput()))
    cam = Webcam(UVC_1080, [phone(4, centre_px=np.array([1300.0, 900.0]), distance=0.34, glare=[])])   # read once zoomed
    src = V4l2Source(cfg.camera, factory=lambda device: cam)
    station.source = src
    src.open()
    try:
        following, snapshot, after = None, None, []
        for _ in range(60):
            before = not station.counters.checkins
            station.step(src.read())
            camera = station.status().camera
            if (before and camera.controls.state.startswith("following code")      # up to the check-in
                    and camera.view.crop != [0, 0, 1920, 1080]):
                following, snapshot = camera, station.snapshot()
            elif not before:
                after.append(camera.view.crop)
    finally:
        src.close()
    assert following is not None, "the crop never followed the code before its check-in"
    camera = following
    assert camera.source == "v4l2" and camera.controls.mode == "1920x1080 MJPG at 30 fps"
    assert camera.view.crop != [0, 0, 1920, 1080] and camera.view.exposure_us > 0
    assert camera.controls.exposure_control == "manual" and camera.controls.state.startswith("following code")
    assert re.match(r"; crop \d+x\d+\+\d+\+\d+, exposure \d+ us", _view(camera)), _view(camera)
    assert station.counters.checkins == 1
    assert snapshot[:2] == b"\xff\xd8"
    # checked in: the loop lets go of the code (a software crop: the next frame is the whole field)
    assert after[1:] and all(c == [0, 0, 1920, 1080] for c in after[1:]), after
    station.outbox.close()


@pytest.mark.slow
@pytest.mark.parametrize("latency", [1, 3])
def test_exposure_holds_still_when_the_webcam_is_faster_or_slower_than_assumed(latency):
    # taken to land 2 frames after a set; a webcam that takes 1 or 3 must not make it oscillate
    # (before frames of uncertain exposure were left unmetered, a 3-frame webcam swung 3.7-33 ms)
    ph = phone(5, glare=[], tilt_rate=0.0)
    cam = Webcam(UVC_1080, [ph], latency=latency)
    _, out = run(cam, "auto", 2.0)
    used = [us for (us, manual), (t, _, _) in zip(cam.used, out) if manual and t > 0.8]
    assert len(used) > 20 and sum(abs(np.log(b / a)) > 0.05 for a, b in zip(used, used[1:])) <= 1
    assert any(c.text == ph.text for _, _, res in out for c in res.codes)
    t, f, _ = out[-1]
    x, y, _, _ = f.view.crop
    bx = to_webcam(ph.code_box(t), cam) - (x, y)
    (x0, y0), (x1, y1) = bx.min(0).astype(int), bx.max(0).astype(int)
    assert 150 < np.percentile(f.gray[y0:y1, x0:x1], 85) < 245      # the screen's white near target


def test_nothing_is_set_on_a_closed_webcam():
    # the grabber closes and reopens a failing webcam while the decoder's thread still steers
    cam = Webcam(UVC_1080)
    src = V4l2Source(CameraConfig(source="v4l2", control="auto"), factory=lambda device: cam)
    src.open()
    src.read()
    src.close()
    before = len(cam.sets)
    assert src._exposure.apply({"AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 2.0}, 5)
    assert len(cam.sets) == before and not src._exposure.refused
    assert src.control_status().exposure_control != "" and "refused" not in src.control_status().state
    with pytest.raises(v4l2.SourceError):
        src.read()
