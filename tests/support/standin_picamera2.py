"""A stand-in Picamera2 for the tests of the camera fallback (agent/capture/landing.py): the
documented calls agent/capture/picam.py makes, a camera that behaves as libcamera does (controls
land 2 or 3 frames after they are set; exposure whole sensor lines, gain the sensor's steps;
every frame's metadata says what it got), and that can misbehave one way at a time. No
rendering physics beyond what the loop and the decoder need: a QR on a lit screen in a dim room,
an optional lamp reflection on it, exposed at the frame's exposure x gain, on a virtual clock
(one frame duration per capture, no sleeping).

Misbehaviours (`misbehave`):
- "ignores crop": ScalerCrop is accepted and never applied (frames stay at the whole field)
- "ignores exposure": AeEnable, ExposureTime and AnalogueGain are accepted, its own AE runs on
- "late": every control lands `late` frames after it is set (6: one more than the loop allows)
- "drops on crop": a crop change restarts the stream: `drop` frames lost (the timestamps jump; a
  capture with a shorter `wait` than the restart raises TimeoutError, as "stops on crop")
- "stops on crop": after a crop change no frame comes until the camera is stopped and started;
  `capture_request(wait=seconds)` raises TimeoutError after that long (of camera time), a
  capture without `wait` fails the test (a real one would block forever)
- "no metadata": `get_metadata()` is {}; "missing keys": only SensorTimestamp and FrameDuration
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.sim.screen import qr_modules

ARRAY = (4608, 2592)
MODES = [{"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (2304, 1296), "fps": 56.03},
         {"format": "SRGGB10_CSI2P", "bit_depth": 10, "size": (4608, 2592), "fps": 14.35}]
LINE_US = 22.0                 # one sensor line: exposures are whole lines (rounded down)
GAIN_CODES = 1024              # IMX708-like gain: 1024 / (1024 - code), code 0..960 (1x-16x)
K = 3e-5                       # linear signal per (radiance x exposure us x gain): white 0.3 at 10 000
ROOM, SCREEN, DARK = 0.08, 1.0, 0.03
AE_TARGET, AE_SPEED = 0.18, 0.25

CONTROLS = {"ScalerCrop": ((0, 0, 64, 64), (0, 0, *ARRAY), (0, 0, *ARRAY)),
            "ExposureTime": (26, 1_000_000, 20_000), "AnalogueGain": (1.0, 16.0, 1.0),
            "AeEnable": (False, True, True), "AeMeteringMode": (0, 3, 0), "AeFlickerMode": (0, 1, 0),
            "AeFlickerPeriod": (100, 1_000_000, 10_000), "FrameDurationLimits": (17_850, 1_000_000, 33_333),
            "AfMode": (0, 2, 0), "AfRange": (0, 2, 0)}


@dataclass
class Showing:
    """A code held up from `start` to `end` (seconds of camera time), centred at `centre` (array
    pixels) swaying `sway` pixels over `period` seconds, `module` array pixels a module; `glare`:
    a lamp's reflection that many times the screen's white, over the code's upper left."""
    text: str
    start: float
    end: float
    centre: tuple[float, float] = (2304.0, 1296.0)
    module: float = 14.0
    sway: float = 0.0
    period: float = 3.0
    glare: float = 0.0

    def __post_init__(self) -> None:
        self.modules = qr_modules(self.text).astype(np.float32) / 255.0     # 1 light, 0 dark

    def at(self, t: float) -> tuple[float, float]:
        return (self.centre[0] + self.sway * math.sin(2 * math.pi * (t - self.start) / self.period),
                self.centre[1] + 0.5 * self.sway * math.cos(2 * math.pi * (t - self.start) / self.period))


@dataclass
class Log:
    sets: list[tuple[int, float, dict]] = field(default_factory=list)     # (frame, camera time, controls)
    configures: list[tuple[int, float, dict]] = field(default_factory=list)
    stops: list[tuple[int, float]] = field(default_factory=list)
    frames: list[dict] = field(default_factory=list)                       # what each frame really got


class StandInPicamera2:
    def __init__(self, showings: list[Showing] = (), misbehave: str | None = None, late: int = 6, drop: int = 8,
                 latency=None, seed: int = 0):
        self.camera_properties = {"Model": "imx708", "PixelArraySize": ARRAY}
        self.camera_controls = dict(CONTROLS)
        self.sensor_modes = [dict(m) for m in MODES]
        self.showings, self.misbehave, self.late, self.drop = list(showings), misbehave, late, drop
        self.rng = random.Random(seed)
        self.latency = latency or (lambda rng: rng.choice((2, 3)))
        self.log = Log()
        self.started, self.stalled, self.config = False, False, None
        self.seq = 0                                  # frames the sensor has taken
        self.t0 = time.monotonic() - 30.0     # camera time starts in the past: no frame stamped later than now
        self.t = self.t0
        self.now: dict = {}
        self.pending: list[tuple[int, dict]] = []
        self.ae = 10_000.0

    # -- configuration ----------------------------------------------------------------------

    def create_video_configuration(self, main=None, lores=None, buffer_count=6, queue=True, sensor=None,
                                   controls=None) -> dict:
        return {"main": dict(main or {}), "lores": dict(lores or {}), "buffer_count": buffer_count, "queue": queue,
                "sensor": dict(sensor or {}), "controls": dict(controls or {})}

    def configure(self, config: dict) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        want = config["sensor"].get("output_size")
        w, h = config["main"]["size"]
        self.mode = next(m for m in MODES if m["size"] == tuple(want)) if want else \
            next(m for m in MODES if m["size"][0] >= w and m["size"][1] >= h)   # picamera2's choice
        self.config = config
        self.now = {"ScalerCrop": (0, 0, *ARRAY), "AeEnable": True, "ExposureTime": 10_000, "AnalogueGain": 1.0,
                    "FrameDurationLimits": (33_333, 33_333)}
        self.pending = []
        self.log.configures.append((self.seq, self.t, config))

    def set_controls(self, controls: dict) -> None:
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self.log.sets.append((self.seq, self.t, dict(controls)))
        if not self.started:
            self.now.update(controls)
            return
        delay = self.late if self.misbehave == "late" else self.latency(self.rng)
        self.pending.append((self.seq + delay, dict(controls)))

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started, self.stalled = True, False

    def stop(self) -> None:
        self.log.stops.append((self.seq, self.t))
        self.started = False

    def close(self) -> None:
        self.started = False

    def cancel_all_and_flush(self) -> None:
        pass

    # -- frames -----------------------------------------------------------------------------

    def frame_s(self) -> float:
        lo, _ = self.now.get("FrameDurationLimits", (33_333, 33_333))
        return max(lo, 1e6 / self.mode["fps"]) / 1e6

    def capture_request(self, wait=None, flush=None):
        if not self.started:
            raise RuntimeError("Camera is not started")
        if self.stalled:
            if wait is None or wait is True:
                raise AssertionError("frames stopped: a real camera would block here forever")
            self.t += float(wait)
            raise TimeoutError()
        self.seq += 1
        self.t += self.frame_s()
        crop_before = self.now["ScalerCrop"]
        for at, controls in [p for p in self.pending if p[0] <= self.seq]:
            for name, value in controls.items():
                if self.misbehave == "ignores crop" and name == "ScalerCrop":
                    continue
                if self.misbehave == "ignores exposure" and name in ("AeEnable", "ExposureTime", "AnalogueGain"):
                    continue
                self.now[name] = tuple(value) if isinstance(value, (list, tuple)) else value
        self.pending = [p for p in self.pending if p[0] > self.seq]
        if self.now["ScalerCrop"] != crop_before:
            if self.misbehave == "drops on crop":
                lost = self.drop * self.frame_s()
                if wait is not None and wait is not True and lost > wait:   # the restart outlasts the wait
                    self.t += float(wait)
                    self.stalled = True
                    raise TimeoutError()
                self.seq += self.drop
                self.t += lost
            elif self.misbehave == "stops on crop":
                self.stalled = True
                return self.capture_request(wait, flush)
        return self._render()

    def _exposure(self) -> tuple[float, float]:
        frame_us = self.frame_s() * 1e6
        if self.now.get("AeEnable", True) or self.misbehave == "ignores exposure":
            t = min(self.ae, 33_000.0, frame_us)
            return t, min(max(self.ae / t, 1.0), 16.0)
        t = min(float(self.now["ExposureTime"]), frame_us)
        gain = min(max(float(self.now["AnalogueGain"]), 1.0), 16.0)
        code = min(round(GAIN_CODES - GAIN_CODES / gain), 960)
        return max(1, math.floor(t / LINE_US)) * LINE_US, GAIN_CODES / (GAIN_CODES - code)

    def _radiance(self, crop: tuple, size: tuple[int, int]) -> np.ndarray:
        x0, y0, cw, ch = crop
        w, h = size
        sx, sy = cw / w, ch / h                               # array pixels per frame pixel
        out = np.full((h, w), ROOM, np.float32)
        t = self.t - self.t0
        for s in self.showings:
            if not s.start <= t < s.end:
                continue
            cx, cy = s.at(t)
            n = s.modules.shape[0]
            side = n * s.module
            for half, level in ((side / 2 + 6 * s.module, SCREEN), (side / 2, None)):
                ax0, ay0, ax1, ay1 = cx - half, cy - half, cx + half, cy + half
                fx0, fy0 = (ax0 - x0) / sx, (ay0 - y0) / sy
                fx1, fy1 = (ax1 - x0) / sx, (ay1 - y0) / sy
                bw, bh = int(round(fx1)) - int(round(fx0)), int(round(fy1)) - int(round(fy0))
                if bw <= 0 or bh <= 0:
                    continue
                if level is not None:
                    patch = np.full((bh, bw), level, np.float32)
                else:
                    small = bw < n
                    patch = cv2.resize(s.modules, (bw, bh),
                                       interpolation=cv2.INTER_AREA if small else cv2.INTER_NEAREST)
                    patch = DARK + (SCREEN - DARK) * patch
                px0, py0 = int(round(fx0)), int(round(fy0))
                qx0, qy0 = max(px0, 0), max(py0, 0)
                qx1, qy1 = min(px0 + bw, w), min(py0 + bh, h)
                if qx1 > qx0 and qy1 > qy0:
                    out[qy0:qy1, qx0:qx1] = patch[qy0 - py0:qy1 - py0, qx0 - px0:qx1 - px0]
            if s.glare:
                gx, gy = (cx - side / 4 - x0) / sx, (cy - side / 4 - y0) / sy
                r = side / 7                                  # array pixels
                bx0, bx1 = int(max(gx - 3 * r / sx, 0)), int(min(gx + 3 * r / sx, w))
                by0, by1 = int(max(gy - 3 * r / sy, 0)), int(min(gy + 3 * r / sy, h))
                if bx1 > bx0 and by1 > by0:
                    yy, xx = np.ogrid[by0:by1, bx0:bx1]
                    out[by0:by1, bx0:bx1] += (s.glare * SCREEN * np.exp(
                        -(((xx - gx) * sx / r) ** 2 + ((yy - gy) * sy / r) ** 2))).astype(np.float32)
        return out

    def _render(self):
        w, h = self.config["lores"]["size"]
        crop = tuple(int(v) for v in self.now["ScalerCrop"])
        exposure, gain = self._exposure()
        radiance = self._radiance(crop, (w, h))
        linear = np.clip(radiance * exposure * gain * K, 0.0, 1.0)
        if self.now.get("AeEnable", True) or self.misbehave == "ignores exposure":
            mean = float(radiance[::8, ::8].mean())
            target = AE_TARGET / (mean * K)
            self.ae *= (target / self.ae) ** AE_SPEED
        y = (255.0 * linear ** (1 / 2.2) + 0.5).astype(np.uint8)
        yuv = np.concatenate([y, np.full((h // 2, w), 128, np.uint8)])
        meta = {"SensorTimestamp": int(self.t * 1e9), "FrameDuration": int(round(self.frame_s() * 1e6)),
                "ScalerCrop": crop, "ExposureTime": int(exposure), "AnalogueGain": float(gain), "DigitalGain": 1.0}
        self.log.frames.append({"seq": self.seq, "t": self.t, "crop": crop, "exposure": int(exposure), "gain": gain,
                                "mode": self.mode["size"]})
        if self.misbehave == "no metadata":
            meta = {}
        elif self.misbehave == "missing keys":
            meta = {k: meta[k] for k in ("SensorTimestamp", "FrameDuration")}
        return _Request(yuv, meta)


class _Request:
    def __init__(self, yuv: np.ndarray, meta: dict):
        self._yuv, self._meta = yuv, meta

    def make_array(self, name: str) -> np.ndarray:
        assert name == "lores"
        return self._yuv

    def get_metadata(self) -> dict:
        return dict(self._meta)

    def release(self) -> None:
        pass
