"""Frame sources and the newest-frame-wins grabber. picamera2 cannot run here: a stand-in object
records how we drive it."""

import threading
import time

import cv2
import numpy as np
import pytest

from agent.capture import Frame, Grabber, SourceError
from agent.capture.picam import Picamera2Source, camera_controls
from agent.capture.replay import ReplaySource
from agent.config import CameraConfig
from support.wait import wait_for


def write_images(folder, n, size=(64, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full(size[::-1], i * 10, np.uint8))


def test_replay_folder_in_name_order_paced_and_finishes(tmp_path):
    write_images(tmp_path / "f", 5)
    (tmp_path / "f" / "notes.txt").write_text("not an image")
    src = ReplaySource(tmp_path / "f", fps=50)
    src.open()
    t0 = time.monotonic()
    frames = [src.read() for _ in range(5)]
    elapsed = time.monotonic() - t0
    assert [int(f.gray[0, 0]) for f in frames] == [0, 10, 20, 30, 40]
    assert 0.06 <= elapsed < 1.0  # 5 frames at 50 fps: paced, not instant
    assert all(b.t > a.t for a, b in zip(frames, frames[1:]))
    assert src.read() is None  # not looping: finished, no error


def test_replay_loops(tmp_path):
    write_images(tmp_path / "f", 3)
    src = ReplaySource(tmp_path / "f", fps=0, loop=True)
    src.open()
    assert [int(src.read().gray[0, 0]) for _ in range(7)] == [0, 10, 20, 0, 10, 20, 0]


def test_replay_video_file(tmp_path):
    path = tmp_path / "v.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(6):
        out.write(np.full((48, 64, 3), i * 40, np.uint8))
    out.release()
    src = ReplaySource(path, fps=0)
    src.open()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert len(frames) == 6 and frames[0].gray.ndim == 2
    assert abs(int(frames[3].gray.mean()) - 120) < 8


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: (p / "empty").mkdir() or p / "empty"])
def test_replay_bad_paths_are_source_errors(tmp_path, make):
    with pytest.raises(SourceError):
        ReplaySource(make(tmp_path)).open()


class CountingSource:
    """Produces frames as fast as asked; fails on demand. With `pause_at`, the read after frame
    `pause_at` waits for `resume` (so a test knows exactly which frame is the newest); the opens
    after the failing ones wait for `ready` when one is given (so a test sees the fault first)."""

    def __init__(self, fail_opens=0, fail_after=None, pause_at=None, ready=None):
        self.fail_opens, self.fail_after, self.pause_at, self.ready = fail_opens, fail_after, pause_at, ready
        self.opens = self.closes = self.i = 0
        self.paused, self.resume = threading.Event(), threading.Event()

    def open(self):
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise SourceError("camera unplugged")
        if self.ready is not None:
            self.ready.wait(30)

    def read(self):
        if self.pause_at is not None and self.i >= self.pause_at:
            self.paused.set()
            self.resume.wait(30)
        self.i += 1
        if self.fail_after is not None and self.i == self.fail_after:
            raise SourceError("capture failed")
        time.sleep(0.002)
        return Frame(np.zeros((4, 4), np.uint8), time.monotonic(), self.i)

    def close(self):
        self.closes += 1


def test_newest_frame_wins():
    src = CountingSource(pause_at=50)
    g = Grabber(src).start()
    try:
        assert src.paused.wait(30)   # a slow consumer: 50 frames arrived and none was taken
        f = g.get()
        assert f.index == 50          # not the oldest queued frame: the newest
        assert g.dropped == 49 and g.get(0.05) is None   # the older ones were replaced, not queued
    finally:
        src.resume.set()
        g.stop()


def test_failing_camera_retried_with_backoff_and_reported():
    ready = threading.Event()
    src = CountingSource(fail_opens=3, ready=ready)
    g = Grabber(src, backoff=(0.05, 0.2)).start()
    try:
        assert wait_for(lambda: g.fault == "camera unplugged", 30)   # reported while it fails
        assert wait_for(lambda: src.opens == 4, 30)                   # retried after each failure
        ready.set()
        assert wait_for(lambda: g.get(0.1) is not None, 30)
        assert g.fault is None and src.opens == 4 and src.closes >= 3
    finally:
        ready.set()
        g.stop()


def test_camera_failing_mid_stream_is_reopened():
    src = CountingSource(fail_after=20)
    g = Grabber(src, backoff=(0.01, 0.05)).start()
    try:
        deadline = time.time() + 5
        while src.opens < 2 and time.time() < deadline:
            g.get(0.05)
        assert src.opens >= 2 and g.get(1.0) is not None
    finally:
        g.stop()


class FakePicamera2:
    """Records what we ask of picamera2; returns YUV420 'lores' arrays like the real one."""

    def __init__(self, controls=("FrameDurationLimits", "AeMeteringMode", "AeFlickerMode", "AeFlickerPeriod",
                                 "AfMode", "AfRange", "ScalerCrop", "ExposureTime", "AnalogueGain", "AeEnable")):
        self.camera_controls = {c: (0, 1, 0) for c in controls}
        self.calls = []

    def create_video_configuration(self, **kw):
        self.calls.append(("create_video_configuration", kw))
        return {"config": kw}

    def configure(self, config):
        self.calls.append(("configure", config))

    def set_controls(self, controls):
        self.calls.append(("set_controls", controls))

    def start(self):
        self.calls.append(("start",))

    def capture_request(self):
        calls = self.calls
        calls.append(("capture_request",))
        w, h = self.calls[0][1]["lores"]["size"]

        class Request:
            def make_array(self, name):
                calls.append(("make_array", name))
                yuv = np.zeros((h * 3 // 2, w), np.uint8)
                yuv[:h] = 100   # Y plane
                yuv[h:] = 7     # U and V planes must not leak into the frame
                return yuv

            def get_metadata(self):
                return {}

            def release(self):
                calls.append(("release",))
        return Request()

    def stop(self):
        self.calls.append(("stop",))

    def close(self):
        self.calls.append(("close",))


def test_picamera2_lores_y_plane_and_screen_controls():
    fake = FakePicamera2()
    src = Picamera2Source(CameraConfig(source="picamera2", width=1280, height=720, fps=30), factory=lambda: fake)
    src.open()
    frame = src.read()
    src.close()
    names = [c[0] for c in fake.calls]
    assert names == ["create_video_configuration", "configure", "set_controls", "start", "capture_request",
                     "make_array", "release", "stop", "close"]
    config = fake.calls[0][1]
    assert config["lores"] == {"size": (1280, 720), "format": "YUV420"}
    assert frame.gray.shape == (720, 1280) and (frame.gray == 100).all()
    controls = fake.calls[2][1]
    assert controls["AeMeteringMode"] == 0                 # centre-weighted: the phone, not the room
    assert controls["AeFlickerMode"] == 1 and controls["AeFlickerPeriod"] == 10000  # 50 Hz mains
    assert controls["AfMode"] == 2 and controls["AfRange"] == 1  # continuous AF, macro
    assert fake.calls[5] == ("make_array", "lores")


def test_picamera2_manual_exposure_crop_and_unsupported_controls():
    cfg = CameraConfig(source="picamera2", exposure_us=8000, analogue_gain=2.0, scaler_crop="100,50,800,600")
    c = camera_controls(cfg, {k: None for k in ("FrameDurationLimits", "AeEnable", "ExposureTime", "AnalogueGain",
                                                 "ScalerCrop")})
    assert c == {"FrameDurationLimits": (33333, 33333), "AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 2.0,
                 "ScalerCrop": (100, 50, 800, 600)}  # no AF controls on a fixed-focus module


def test_picamera2_failures_become_source_errors():
    def broken():
        raise SourceError("no camera: list index out of range")
    with pytest.raises(SourceError, match="no camera"):
        Picamera2Source(CameraConfig(), factory=broken).open()

    class FailsToStart(FakePicamera2):
        def start(self):
            raise RuntimeError("Camera in use by another process")
    fake = FailsToStart()
    with pytest.raises(SourceError, match="in use"):
        Picamera2Source(CameraConfig(), factory=lambda: fake).open()
    assert fake.calls[-1] == ("close",)
