"""Did the camera do what the closed loop asked? (`[camera] control = "auto"` on picamera2)

The loop (agent/capture/steer.py) asks libcamera for a crop (ScalerCrop), an exposure time and a
gain, and believes what each frame's metadata says it got. A camera that does not behave would
make it steer blind: a sensor whose driver has no ScalerCrop, an IPA that keeps its own auto
exposure (or a libcamera whose manual-exposure controls are named otherwise), a pipeline with a
deeper queue that applies controls later than the loop can follow, one that restarts its stream
on a crop change (frames lost while the patient holds the phone up), or one whose frames do not
say what they got. `Landing` watches every frame's metadata against what was asked and says,
once, why the camera cannot be steered; agent/capture/picam.py then goes back to the fixed view
for good: a camera that misbehaved once is not trusted again (no flapping between the two views)
until the service restarts.

Frames are counted as the source reads them (every frame the grabber collects), from the newest
frame read when the controls were set; times are the frames' own SensorTimestamp. Each check is
bounded in frames of the running mode ("auto" runs at [camera] fps: 30 by default, 15 or less on
a slow Pi), so every misbehaviour is found well within a second.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

#: a control must show in the metadata of one of this many frames after it was set. libcamera
#: applies a request's controls 2-3 frames later (the sensor's exposure and gain delays, which its
#: DelayedControls report frame by frame); two frames of margin for a request queued behind others
#: already in flight. A camera answering on the 6th frame or later cannot be followed: the loop
#: has metered and moved on before its crop comes. 5 frames: 0.17 s at 30 fps, 0.5 s at 10 fps.
LAND_FRAMES = 5
#: frames in a row whose metadata lacks ScalerCrop, ExposureTime or AnalogueGain (or has them
#: unreadable): the loop cannot tell what its frames got. As many as a control may take to land.
SILENT_FRAMES = LAND_FRAMES
#: a frame that brings a new crop (the crop asked has just landed) more than this many frame
#: durations after the frame before it: frames the camera dropped for the crop change (a stream
#: restarted). A frame may come a little late; a restart costs several. Only the camera's part of
#: the gap counts: the time the reader took to ask for the next frame is taken off (frames that
#: come while nobody waits are not queued, queue=False), and only a gap at the change itself (a
#: busy machine may delay a frame at any time, a crop change is what restarts a stream).
DROP_GAP_FRAMES = 4
#: from the crop asked until the first frame after the one that brought it, no frame for this
#: long: frames stopped (waited for with picamera2's documented `capture_request(wait=seconds)`,
#: which raises TimeoutError). 15 frame durations at 30 fps, 5 at 10 fps: a frame that comes late
#: is not taken for it, and with the 2-3 frames the crop takes to land it is found within 1 s.
STALL_S = 0.5
#: a crop has landed when each of x, y, width and height is within this share of the pixel
#: array's width of what was asked: libcamera aligns a crop to a few pixels (even coordinates,
#: the ISP's alignment), a camera that ignores it stays at the whole field, thousands of pixels away
CROP_TOL = 0.01
#: an exposure time has landed within this share, plus EXPOSURE_SLACK_US: sensors expose whole
#: lines (10-35 us each on the Pi cameras' full-resolution modes), which matters for the short
#: frames of a bracket (1/32 of a normal exposure can be 100 us)
EXPOSURE_TOL = 0.10
EXPOSURE_SLACK_US = 100.0
#: an analogue gain has landed within this share: sensors take gain in steps (1/16 of unity at
#: low gain on an OV5647, 1.6-4% at the top of the IMX708/IMX477/IMX219 ranges)
GAIN_TOL = 0.10

CHECKED = ("ScalerCrop", "ExposureTime", "AnalogueGain")


@dataclass(frozen=True)
class Landed:
    """What a frame's metadata says it was taken with."""
    crop: tuple[int, int, int, int]
    exposure_us: int
    gain: float
    #: the frame's start, seconds (SensorTimestamp), and duration in us (FrameDuration): None
    #: when the metadata does not say
    t: float | None = None
    frame_us: float | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def parse(meta: Any) -> Landed | None:
    """A frame's metadata (picamera2's `request.get_metadata()`), or None when it lacks what the
    loop needs (ScalerCrop, ExposureTime, AnalogueGain) or holds it in a form no camera writes.
    Never raises: metadata comes from a driver we did not write."""
    if not isinstance(meta, dict):
        return None
    crop = meta.get("ScalerCrop")
    try:
        values = [_number(v) for v in crop] if crop is not None and len(crop) == 4 else None
    except TypeError:
        values = None
    exposure, gain = _number(meta.get("ExposureTime")), _number(meta.get("AnalogueGain"))
    if values is None or None in values or exposure is None or gain is None:
        return None
    x, y, w, h = (int(v) for v in values)
    if w <= 0 or h <= 0 or exposure < 0 or gain <= 0:
        return None
    stamp, duration = _number(meta.get("SensorTimestamp")), _number(meta.get("FrameDuration"))
    return Landed((x, y, w, h), int(exposure), gain, None if stamp is None else stamp / 1e9,
                  duration if duration and duration > 0 else None)


@dataclass
class _Ask:
    value: Any
    frame: int          # the newest frame read when it was set


def _range(limits: Any) -> tuple[float, float] | None:
    """(min, max) of a camera_controls entry ((min, max, default)), None when not numbers."""
    try:
        lo, hi = _number(limits[0]), _number(limits[1])
    except (TypeError, IndexError, KeyError):
        return None
    return (lo, hi) if lo is not None and hi is not None and lo <= hi else None


@dataclass(eq=False)
class Landing:
    """Watches that what the loop asks lands. `asked()` after each set_controls (the loop's
    thread), `seen()` on each frame read (the grabber's): the first misbehaviour's reason, once.

    `array_width`: the pixel array's (crop tolerance); `frame_us`: the mode's frame duration (when
    a frame does not say its own); `available`: picamera2's camera_controls, whose ranges clamp
    what is expected (a gain above the sensor's range lands at its top, as libcamera does)."""
    array_width: int
    frame_us: float
    available: dict[str, Any] = field(default_factory=dict)
    _asks: dict[str, list[_Ask]] = field(default_factory=lambda: {k: [] for k in CHECKED})
    _crop: tuple[int, int, int, int] | None = None     # the crop of the last frame
    _crop_landed: int | None = None                    # the frame that brought the last crop asked
    _silent: int = 0
    _last_t: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def asked(self, controls: dict[str, Any], frame: int) -> None:
        """Controls just set (set_controls returned) after the camera's frame `frame` was read."""
        with self._lock:
            auto = controls.get("AeEnable") is True   # the camera's own exposure again: nothing to expect
            if auto:                                  # (the 0s that clear the set values are no ask)
                self._asks["ExposureTime"].clear()
                self._asks["AnalogueGain"].clear()
            for name in CHECKED:
                if name in controls and not (auto and name != "ScalerCrop"):
                    self._asks[name].append(_Ask(self._expected(name, controls[name]), frame))

    def _expected(self, name: str, value: Any) -> Any:
        if name == "ScalerCrop":
            return tuple(int(v) for v in value)
        value = float(value)
        limits = _range(self.available.get(name))
        if limits is not None:
            value = min(max(value, limits[0]), limits[1])
        return value

    def crop_under_way(self, frame: int) -> bool:
        """Whether the frame after `frame` must come soon: a crop asked has not landed yet, or has
        just landed (on `frame`)."""
        with self._lock:
            return bool(self._asks["ScalerCrop"]) or self._crop_landed == frame

    def seen(self, frame: int, landed: Landed | None, away_s: float = 0.0) -> str | None:
        """The camera's frame number `frame` (counted as `asked()` counts) and what its metadata
        says: why the camera cannot be steered, or None while it behaves. `away_s`: how long the
        reader took, after the previous frame, to ask for this one (frames missed then are its own)."""
        with self._lock:
            if landed is None:
                self._silent += 1
                if self._silent >= SILENT_FRAMES:
                    return (f"{self._silent} frames in a row whose metadata lacks ScalerCrop, ExposureTime or "
                            "AnalogueGain")
                return None
            self._silent = 0
            if (why := self._gap(frame, landed, away_s)) is not None:
                return why
            for name in CHECKED:
                if (why := self._landed(name, frame, landed)) is not None:
                    return why
            return None

    def _gap(self, frame: int, landed: Landed, away_s: float) -> str | None:
        """Frames dropped for a crop change: a gap before the frame that brings a crop asked."""
        last, self._last_t = self._last_t, landed.t
        changed, self._crop = self._crop is not None and landed.crop != self._crop, landed.crop
        asks = self._asks["ScalerCrop"]
        if not changed or not asks or last is None or landed.t is None:
            return None
        gap = landed.t - last - away_s
        duration = (landed.frame_us or self.frame_us) / 1e6
        if gap > DROP_GAP_FRAMES * duration and any(self._matches("ScalerCrop", a.value, landed.crop, 0) for a in asks):
            return (f"frames dropped on a crop change ({landed.t - last:.2f} s between two frames, "
                    f"{gap / duration - 1:.0f} frames missing)")
        return None

    def _landed(self, name: str, frame: int, landed: Landed) -> str | None:
        asks = self._asks[name]
        if not asks:
            return None
        got = {"ScalerCrop": landed.crop, "ExposureTime": landed.exposure_us, "AnalogueGain": landed.gain}[name]
        frame_us = landed.frame_us or self.frame_us
        for i in range(len(asks) - 1, -1, -1):     # the newest that landed also ends the older ones
            if self._matches(name, asks[i].value, got, frame_us):
                del asks[:i + 1]
                if name == "ScalerCrop":
                    self._crop_landed = frame
                break
        if asks and frame - asks[0].frame >= LAND_FRAMES:
            return (f"the camera did not apply {name} within {LAND_FRAMES} frames "
                    f"(asked {_show(name, asks[0].value)}, its frames show {_show(name, got)})")
        return None

    def _matches(self, name: str, want: Any, got: Any, frame_us: float) -> bool:
        if name == "ScalerCrop":
            return max(abs(a - b) for a, b in zip(want, got)) <= CROP_TOL * self.array_width
        if name == "ExposureTime":
            want = min(want, frame_us)          # no exposure is longer than its frame
            return abs(got - want) <= EXPOSURE_TOL * want + EXPOSURE_SLACK_US
        return abs(got - want) <= GAIN_TOL * want


def _show(name: str, value: Any) -> str:
    if name == "ScalerCrop":
        x, y, w, h = value
        return f"{w}x{h}+{x}+{y}"
    return f"{value:.0f} us" if name == "ExposureTime" else f"{value:.2f}"
