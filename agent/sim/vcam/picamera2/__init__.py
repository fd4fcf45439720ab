"""A virtual Raspberry Pi Camera Module 3 behind the picamera2 API: put `agent/sim/vcam` first on
sys.path (tests, bench/camera.py) and `agent/capture/picam.py` runs unchanged against it.

Only the documented calls the product uses are here (the Picamera2 manual: `camera_controls`,
`camera_properties`, `sensor_modes`, `create_video_configuration`, `configure`, `set_controls`,
`start`, `capture_array`, `capture_request` with `make_array`, `get_metadata`, `release`,
`capture_metadata`, `stop`, `close`); anything else raises, so a product change that reaches for
an undocumented call fails here instead of on a Pi. Controls are libcamera's (ScalerCrop in
pixel-array coordinates, ExposureTime, AnalogueGain, AeEnable, AeMeteringMode, FrameDurationLimits,
...); an unknown control raises as picamera2 does ("not advertised by libcamera").

Behaviour that matters to a controller, as on the real camera:
- New controls land 2 or 3 frames after `set_controls` (libcamera's delayed controls), and every
  frame's metadata says what it was really taken with.
- Auto exposure (AeEnable) converges over several frames on its metered region (centre-weighted
  over the crop), about 20% of the way per frame in log exposure.
- Frames are paced in wall-clock time at the configured frame duration (frames the application
  did not collect in time are dropped, `queue=False`); SensorTimestamp is CLOCK_MONOTONIC in ns.

The scene: `agent.sim.camera` physics; what is shown comes from `SCENE` (set by a test) or from the
JSON file named by $SCANNER_VCAM_SCENE (the benchmark's daemon): {"seed": n, "phones": [{"text",
"start", "duration", "level", "seed"}...]}, times in seconds from the first camera start in the
process. $SCANNER_VCAM_LOG names a file where each frame's time, crop and exposure are appended.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from agent.sim import camera as phys

__all__ = ["Picamera2"]

#: set by tests: a Scene; else read from $SCANNER_VCAM_SCENE
SCENE = None
#: "wall": frames paced in real time (the daemon); "virtual": each capture advances a simulated
#: clock by one frame duration (fast tests)
CLOCK = "wall"

#: True: set ExposureTime and AnalogueGain keep applying while both are non-zero, whatever AeEnable
#: says (a camera whose auto exposure resumes only once they are cleared: the second virtual camera
#: models libcamera so); False: AeEnable alone switches it on and off
MANUAL_HOLDS = False
AE_SPEED = 0.2          # share of the log-exposure error corrected per frame
AE_TARGET = 0.16        # linear mean of the metered region (libcamera's default Y target)
AE_MAX_EXPOSURE_US = 33_000
_EPOCH: list[float] = []
_NOW: list[float] = [0.0]       # CLOCK = "virtual": the time of the last frame handed over


def now() -> float:
    """The present on the virtual clock (CLOCK = "virtual"): the moment the last frame was handed
    over. A test gives it to the source as its clock, so that the time between reads and the
    frames' timestamps are the camera's, whatever the machine's speed (an emulated arm64 run
    decodes a frame in about a second of real time)."""
    return _NOW[0]


@dataclass
class Scene:
    phones: list[phys.Phone] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_file(cls, path: str) -> "Scene":
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        phones = []
        for p in spec.get("phones", []):
            ph = phys.Phone(p["text"], float(p["start"]), float(p["duration"]), p.get("level", "medium"),
                            int(p.get("seed", 0)))
            if "centre_px" in p:        # a placed phone (bench/camera.py --sticker), not a drawn one
                ph.centre_px = np.array(p["centre_px"], np.float64)
            if "distance" in p:
                ph.distance = float(p["distance"])
            if "glare" in p:
                ph.glare = [tuple(g) for g in p["glare"]]
            phones.append(ph)
        return cls(phones, int(spec.get("seed", 0)))


def _scene() -> Scene:
    if SCENE is not None:
        return SCENE
    path = os.environ.get("SCANNER_VCAM_SCENE")
    return Scene.from_file(path) if path else Scene()


CONTROLS = {
    "ScalerCrop": ((0, 0, 64, 64), (0, 0, phys.ARRAY[0], phys.ARRAY[1]), (0, 0, phys.ARRAY[0], phys.ARRAY[1])),
    "ExposureTime": (26, 1_000_000, 20_000),
    "AnalogueGain": (1.0, phys.MAX_GAIN, 1.0),
    "AeEnable": (False, True, True),
    "AeMeteringMode": (0, 3, 0),
    "AeFlickerMode": (0, 1, 0),
    "AeFlickerPeriod": (100, 1_000_000, 10_000),
    "ExposureValue": (-8.0, 8.0, 0.0),
    "FrameDurationLimits": (17_850, 1_000_000, 33_333),
    "AfMode": (0, 2, 0),
    "AfRange": (0, 2, 0),
    "LensPosition": (0.0, 32.0, 1.0),
}


class _Request:
    def __init__(self, arrays: dict, metadata: dict):
        self._arrays, self._metadata = arrays, metadata

    def make_array(self, name: str) -> np.ndarray:
        return self._arrays[name]()

    def get_metadata(self) -> dict:
        return dict(self._metadata)

    def release(self) -> None:
        self._arrays = {}

    def __getattr__(self, name: str):
        raise NotImplementedError(f"virtual camera: CompletedRequest.{name} is not simulated")


class Picamera2:
    def __init__(self, camera_num: int = 0, tuning=None):
        if camera_num != 0:
            raise IndexError("list index out of range")   # what picamera2 says for a missing camera
        self.camera_properties = {"Model": "imx708", "PixelArraySize": phys.ARRAY,
                                  "PixelArrayActiveAreas": [(0, 0, *phys.ARRAY)], "UnitCellSize": (1400, 1400)}
        self.camera_controls = dict(CONTROLS)
        self.sensor_modes = [{"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10,
                              "size": m.size, "fps": m.max_fps, "crop_limits": (0, 0, *phys.ARRAY),
                              "exposure_limits": (26, 1_000_000, None)} for m in phys.MODES]
        self._config: dict | None = None
        self._started = False
        self._lock = threading.Lock()
        self._pending: list[tuple[int, dict]] = []        # (frame it lands on, controls)
        self._now: dict = {}                               # controls in effect
        self._seq = -1
        self._virtual_t = 0.0
        self._ae = phys.Exposure(10_000, 1.0)
        self._rng = random.Random(0)
        self._log = os.environ.get("SCANNER_VCAM_LOG")

    # -- configuration -------------------------------------------------------------------------

    def create_video_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                   buffer_count=6, controls=None, display="main", encode="main", queue=True,
                                   sensor=None, use_case="video") -> dict:
        main = dict(main or {})
        main.setdefault("size", (1280, 720))
        main.setdefault("format", "XBGR8888")
        config = {"use_case": use_case, "main": main, "lores": dict(lores) if lores else None,
                  "buffer_count": buffer_count, "queue": queue, "controls": dict(controls or {}),
                  "sensor": dict(sensor or {})}
        if config["lores"] is not None:
            config["lores"].setdefault("format", "YUV420")
            lw, lh = config["lores"]["size"]
            if lw > main["size"][0] or lh > main["size"][1]:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
        return config

    def _mode_for(self, config: dict) -> phys.Mode:
        """picamera2's choice: the mode of the requested sensor output_size, else the smallest mode
        that covers the main stream (its frame rate is what a video configuration wants)."""
        want = config["sensor"].get("output_size")
        if want is not None:
            for m in phys.MODES:
                if tuple(m.size) == tuple(want):
                    return m
            raise RuntimeError(f"no sensor mode of size {want}")
        w, h = config["main"]["size"]
        return next((m for m in phys.MODES if m.size[0] >= w and m.size[1] >= h), phys.MODES[-1])

    def configure(self, config: dict) -> None:
        if self._started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.mode = self._mode_for(config)
        self._config = config
        self._fixed: dict[str, bool] = {}      # ExposureTime / AnalogueGain set by the program
        self._now = {"ScalerCrop": (0, 0, *phys.ARRAY), "ExposureTime": 10_000, "AnalogueGain": 1.0,
                     "AeEnable": True, "FrameDurationLimits": (33_333, 33_333)}
        self._apply(config["controls"], 0)

    def _apply(self, controls: dict, delay: int) -> None:
        for k, v in controls.items():
            if k not in self.camera_controls:
                raise RuntimeError(f"Control {k} is not advertised by libcamera")
        if delay == 0:
            self._now.update(controls)
        else:
            self._pending.append((self._sensor_seq() + delay, dict(controls)))

    def set_controls(self, controls: dict) -> None:
        with self._lock:
            self._apply(dict(controls), self._rng.choice((2, 3)) if self._started else 0)

    # -- running -------------------------------------------------------------------------------

    def start(self, config=None, show_preview=False) -> None:
        if config is not None:
            self.configure(config)
        if self._config is None:
            raise RuntimeError("Camera has not been configured")
        self.scene = _scene()
        self.optics = phys.Optics(phys.Counter(self.scene.seed), self.scene.seed)
        if CLOCK != "wall" and not self._virtual_t:
            # simulated time runs faster than real time: start it in the past, so that no frame is
            # stamped later than the moment it is delivered (as on a real camera)
            self._virtual_t = time.monotonic() - 30.0
        if not _EPOCH or CLOCK != "wall":
            _EPOCH[:] = [time.monotonic() if CLOCK == "wall" else self._virtual_t]
        self._t0 = time.monotonic() if CLOCK == "wall" else self._virtual_t
        self._started = True

    def _frame_s(self) -> float:
        lo, hi = self._now.get("FrameDurationLimits", (33_333, 33_333))
        return max(lo, self.mode.min_frame_us) / 1e6

    def _sensor_seq(self) -> int:
        """The frame the sensor is on now (frames keep coming whether collected or not)."""
        if CLOCK != "wall":
            return self._seq
        return max(self._seq, int((time.monotonic() - self._t0) / self._frame_s()))

    def _next_frame(self) -> tuple[int, float]:
        dur = self._frame_s()
        if CLOCK != "wall":
            self._virtual_t += dur
            _NOW[0] = self._virtual_t
            return self._seq + 1, self._virtual_t
        k = max(self._seq + 1, math.ceil((time.monotonic() - self._t0) / dur))
        t = self._t0 + k * dur
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return k, t

    def capture_request(self, flush=None, wait=None) -> _Request:
        if not self._started:
            raise RuntimeError("Camera is not started")
        seq, t = self._next_frame()
        with self._lock:
            self._seq = seq
            due = [c for at, c in self._pending if at <= seq]
            self._pending = [(at, c) for at, c in self._pending if at > seq]
            for c in due:
                self._now.update(c)
                for name in ("ExposureTime", "AnalogueGain"):    # set (non-zero) or cleared (0)
                    if name in c:
                        self._fixed[name] = bool(c[name])
            now = dict(self._now)
        return self._render(seq, t, now)

    def _auto(self, now: dict) -> bool:
        held = MANUAL_HOLDS and self._fixed.get("ExposureTime", False) and self._fixed.get("AnalogueGain", False)
        return bool(now.get("AeEnable", True)) and not held

    def _exposure(self, now: dict) -> phys.Exposure:
        limit = self._frame_s() * 1e6
        if self._auto(now):
            return phys.Exposure(min(self._ae.exposure_us, limit), self._ae.gain)
        return phys.Exposure(min(float(now["ExposureTime"]), limit),
                             min(max(float(now["AnalogueGain"]), 1.0), phys.MAX_GAIN))

    def _render(self, seq: int, t: float, now: dict) -> _Request:
        cpu0 = time.thread_time()
        crop = self._crop(now["ScalerCrop"])
        exp = self._exposure(now)
        scene_t = t - _EPOCH[0]
        streams = {"main": self._config["main"]["size"]}
        if self._config["lores"] is not None:
            streams["lores"] = self._config["lores"]["size"]
        size = streams.get("lores", streams["main"])
        w, h = size[0] - size[0] % 2, size[1] - size[1] % 2
        nits = self.optics.radiance(self.scene.phones, scene_t, self.mode, crop, (w, h), exp.exposure_us / 1e6)
        linear = self.optics.expose(nits, self.mode, crop[2], exp)
        if self._auto(now):
            self._agc(linear, exp)
        y = phys.tone(linear)
        def array(name: str, sw: int, sh: int):
            def make() -> np.ndarray:      # built when asked for: the product reads lores only
                plane = y if (sw, sh) == (w, h) else _resize(y, (sw, sh))
                if self._config[name].get("format", "") == "YUV420":
                    return np.concatenate([plane, np.full((sh // 2, sw), 128, np.uint8)])
                return np.repeat(plane[..., None], 4, axis=2)
            return make
        arrays = {name: array(name, sw, sh) for name, (sw, sh) in streams.items()}
        ts = int(t * 1e9) if CLOCK == "wall" else int(t * 1e9)
        meta = {"SensorTimestamp": ts, "FrameDuration": int(self._frame_s() * 1e6), "ScalerCrop": crop,
                "ExposureTime": int(exp.exposure_us), "AnalogueGain": float(exp.gain), "DigitalGain": 1.0,
                "AeLocked": False, "Lux": 300.0, "SensorTemperature": 40.0}
        if self._log:
            with open(self._log, "a", encoding="utf-8") as f:
                f.write(json.dumps({"seq": seq, "t": t, "scene_t": scene_t, "crop": crop,
                                    "wall": time.time() - (time.monotonic() - t),
                                    "render_s": time.thread_time() - cpu0,
                                    "exposure_us": meta["ExposureTime"], "gain": round(exp.gain, 3)}) + "\n")
        return _Request(arrays, meta)

    def _crop(self, crop) -> tuple[int, int, int, int]:
        """libcamera's rules: inside the array, at least 64 px, even coordinates."""
        x, y, w, h = (int(v) for v in crop)
        w = min(max(w, 64), phys.ARRAY[0]) & ~1
        h = min(max(h, 64), phys.ARRAY[1]) & ~1
        x = min(max(x, 0), phys.ARRAY[0] - w) & ~1
        y = min(max(y, 0), phys.ARRAY[1] - h) & ~1
        return x, y, w, h

    def _agc(self, linear: np.ndarray, exp: phys.Exposure) -> None:
        """libcamera-like AGC: centre-weighted mean of the metered image, corrected a share per
        frame; exposure first up to 33 ms, then gain."""
        h, w = linear.shape
        small = linear[::8, ::8]
        yy, xx = np.mgrid[0:small.shape[0], 0:small.shape[1]]
        weight = np.exp(-(((xx / small.shape[1] - 0.5) / 0.3) ** 2 + ((yy / small.shape[0] - 0.5) / 0.3) ** 2))
        mean = float((small * weight).sum() / weight.sum())
        product = exp.exposure_us * exp.gain
        target = product * (AE_TARGET / max(mean, 1e-4))
        if mean > 0.9:     # clipped: the true level is unknown, step down hard
            target = product / 2
        new = product * (target / product) ** AE_SPEED
        expo = min(new, AE_MAX_EXPOSURE_US)
        gain = min(max(new / expo, 1.0), phys.MAX_GAIN)
        self._ae = phys.Exposure(expo, gain)

    def capture_array(self, name: str = "main", wait=None) -> np.ndarray:
        request = self.capture_request()
        try:
            return request.make_array(name)
        finally:
            request.release()

    def capture_metadata(self, wait=None) -> dict:
        request = self.capture_request()
        try:
            return request.get_metadata()
        finally:
            request.release()

    def stop(self) -> None:
        self._started = False

    def close(self) -> None:
        self._started = False

    def __getattr__(self, name: str):
        raise NotImplementedError(f"virtual camera: Picamera2.{name} is not simulated (not used by the product)")


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
