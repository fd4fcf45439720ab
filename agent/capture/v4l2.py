"""A USB webcam through OpenCV's V4L2 backend.

`[camera] control = "fixed"`: the webcam at `width` x `height` and `fps`, under its own automatic
exposure, the whole frame to the decoder (as before).

`control = "auto"`: what of the closed loop (agent/capture/steer.py) a UVC webcam allows:

- **Mode**: the largest of the common UVC resolutions the webcam accepts at 15 fps or more
  (MJPG asked for first: uncompressed YUYV holds 15 fps over USB 2 only at small sizes; YUYV is
  kept where it does). OpenCV cannot list a camera's modes, so each is asked for and what the
  webcam accepted is read back.
- **Crop**: a webcam has no ScalerCrop, so the crop is cut in software from the full-resolution
  frame: the decoder gets the region around the located code at up to the webcam's native pixels
  (the whole field is scaled down to `width` x `height`, as the fixed view is), and each Frame
  carries its crop, so the decoder's fusion maps modules between frames of different crops.
- **Exposure**: manual exposure (V4L2 `exposure_auto` = manual, `exposure_time_absolute` in 100 us
  units) metered on the located screen, longer for a dim one, short/normal bracketing under a
  reflection: steer.py's decisions. The exposure x gain it asks for becomes exposure time alone
  (up to the frame time): UVC gain is in each webcam's own units, so gain stays the webcam's.
  A webcam has no per-frame metadata: a new exposure is taken to show SETTLE_FRAMES frames after
  it was set, and a frame that another latency of LATENCIES would expose differently is not
  metered (else a slower webcam makes the exposure swing).
- **Refused controls**: a webcam that refuses manual exposure (the set fails, the mode does not
  read back as manual, or the exposure time stays put whatever is asked) keeps its own auto
  exposure, with the crop still working; this is logged once and shown in `control_status()`.

The capture object comes from a factory (cv2.VideoCapture by default), so tests drive this module
with a stand-in that honours or refuses properties as a real webcam does.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

import cv2

from agent.capture.source import Frame, SourceError, now
from agent.capture.steer import CaptureLoop
from agent.capture.view import View
from agent.config import CameraConfig
from agent.status_types import ControlStatus

log = logging.getLogger(__name__)

#: "auto" takes the largest mode that holds this many frames a second
MIN_AUTO_FPS = 15.0
#: resolutions UVC webcams commonly offer, largest first (a webcam may also snap a request to a
#: size of its own: what it read back counts)
CANDIDATES = ((4096, 2160), (3840, 2160), (2592, 1944), (2560, 1440), (2048, 1536), (1920, 1080),
              (1600, 1200), (1280, 960), (1280, 720), (1024, 768), (800, 600), (640, 480))
# V4L2_CID_EXPOSURE_AUTO values (OpenCV's V4L2 backend passes them through unchanged)
AE_MANUAL = 1
AE_APERTURE_PRIORITY = 3          # UVC webcams' usual automatic mode
EXPOSURE_UNIT_US = 100            # V4L2_CID_EXPOSURE_ABSOLUTE
#: a new exposure shows in the frame this many reads after it was set, as far as known: UVC
#: webcams take 1-3 frames (LATENCIES) and no metadata says which frame got it. Frames that any
#: latency in that range would give a different exposure are not metered.
SETTLE_FRAMES = 2
LATENCIES = (1, 2, 3)


def _default_factory(device: int) -> Any:
    return cv2.VideoCapture(device, cv2.CAP_V4L2)


@dataclass(frozen=True)
class Mode:
    width: int
    height: int
    fps: float
    fourcc: str

    def __str__(self) -> str:
        return f"{self.width}x{self.height} {self.fourcc or '?'} at {self.fps:g} fps"


def _fourcc(value: float) -> str:
    v = int(value)
    text = "".join(chr((v >> 8 * i) & 0xFF) for i in range(4))
    return text if text.isprintable() else ""


def _accepted(cap: Any) -> Mode:
    return Mode(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                float(cap.get(cv2.CAP_PROP_FPS)), _fourcc(cap.get(cv2.CAP_PROP_FOURCC)))


def _ask(cap: Any, width: int, height: int, fps: float, fourcc: str = "MJPG") -> Mode:
    """Ask for a mode; what the webcam accepted (read back). A format the webcam does not have
    is refused (set returns False) and the webcam keeps the one it had."""
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    cap.set(cv2.CAP_PROP_FPS, fps)
    return _accepted(cap)


def probe_modes(cap: Any, fps: float) -> list[Mode]:
    """Modes the webcam accepted, asking for each candidate in MJPG at `fps` (it answers with
    the nearest rate it has); candidates no larger than a usable mode already found are not asked
    for. The largest usable size is asked for once more in YUYV: uncompressed is kept where it
    holds the rate (no JPEG artefacts on the modules' edges, no JPEG decoding on the CPU)."""
    seen: list[Mode] = []
    best = 0
    for w, h in CANDIDATES:
        if w * h <= best:
            continue
        mode = _ask(cap, w, h, fps)
        if mode.width > 0 and mode.height > 0 and mode not in seen:
            seen.append(mode)
            if mode.fps >= MIN_AUTO_FPS:
                best = max(best, mode.width * mode.height)
    top = choose_mode(seen)
    if top is not None and top.fourcc != "YUYV":
        raw = _ask(cap, top.width, top.height, fps, "YUYV")
        if raw.fourcc == "YUYV" and raw not in seen:
            seen.append(raw)
    return seen


def choose_mode(modes: list[Mode]) -> Mode | None:
    """The largest mode at MIN_AUTO_FPS or more, uncompressed YUYV before MJPG at the same size
    (None: none holds the rate)."""
    usable = [m for m in modes if m.fps >= MIN_AUTO_FPS]
    return max(usable, key=lambda m: (m.width * m.height, m.fourcc == "YUYV", m.fps), default=None)


def output_size(crop: tuple[int, int, int, int], stream: tuple[int, int]) -> tuple[int, int]:
    """The decoder's frame for a crop: its native pixels, or scaled down to the stream's pixel
    count (a code read in the whole field costs what the fixed view costs)."""
    w, h = crop[2], crop[3]
    s = max(1.0, math.sqrt(w * h / (stream[0] * stream[1])))
    return max(1, round(w / s)), max(1, round(h / s))


class V4l2Source:
    def __init__(self, cfg: CameraConfig, factory: Callable[[int], Any] = _default_factory):
        self.cfg, self.factory = cfg, factory
        self._cap: Any = None
        self._i = 0
        self.loop: CaptureLoop | None = None
        self.mode = ""
        self.crop: tuple[int, int, int, int] | None = None
        self._stream = (cfg.width, cfg.height)
        self._exposure = ExposureControl(None, 1e6 / max(cfg.fps, 0.1))
        self._unmetered: deque[int] = deque(maxlen=32)   # frames whose exposure is not certain

    def open(self) -> None:
        cap = self.factory(self.cfg.device)
        if not cap.isOpened():
            raise SourceError(f"cannot open /dev/video{self.cfg.device}")
        mode = None
        try:
            if self.cfg.control == "auto":
                initial = cap.get(cv2.CAP_PROP_FOURCC)
                mode = choose_mode(probe_modes(cap, max(self.cfg.fps, MIN_AUTO_FPS)))
                if mode is None:
                    cap.set(cv2.CAP_PROP_FOURCC, initial)     # as "fixed" would have it
                    log.warning("camera control auto: no mode of /dev/video%d holds %g fps; using %dx%d",
                                self.cfg.device, MIN_AUTO_FPS, self.cfg.width, self.cfg.height)
                else:
                    mode = _ask(cap, mode.width, mode.height, max(self.cfg.fps, MIN_AUTO_FPS),
                                mode.fourcc if len(mode.fourcc) == 4 else "MJPG")
            if mode is None:   # "fixed" (as before): the configured size and rate
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
                cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
            accepted = _accepted(cap)
        except cv2.error as exc:
            cap.release()
            raise SourceError(f"/dev/video{self.cfg.device}: {exc}") from exc
        self._cap, self.mode, self.loop, self.crop = cap, str(accepted), None, None
        if mode is not None and accepted.width > 0 and accepted.height > 0:
            array = (accepted.width, accepted.height)
            self._stream = (min(self.cfg.width, array[0]), min(self.cfg.height, array[1]))
            frame_us = 1e6 / max(accepted.fps, 1.0)
            self.loop = CaptureLoop(array, self._stream, native_bin=1, frame_us=frame_us)
            self.loop.max_gain = 1.0          # V4L2 sets the exposure time alone
            self.loop.zoom_whole = False      # the whole-code zoom is measured on picamera2 only
            self.crop = self.loop.full
            self._exposure = ExposureControl(cap, frame_us)
            log.info("camera control auto: /dev/video%d in %s (the largest mode at %g fps or more); "
                     "the decoder gets a crop around the located code, exposure metered on it",
                     self.cfg.device, self.mode, MIN_AUTO_FPS)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError("camera not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            raise SourceError(f"/dev/video{self.cfg.device} returned no frame (unplugged?)")
        t = now()
        stamp = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000   # the buffer's CLOCK_MONOTONIC time
        if stamp > 0 and abs(stamp - t) < 60.0:
            t = stamp
        self._i += 1
        if self.loop is None or self.crop is None:
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            return Frame(gray, t, self._i)
        x, y, w, h = self.crop
        ih, iw = img.shape[:2]
        x, y = min(max(x, 0), max(iw - 1, 0)), min(max(y, 0), max(ih - 1, 0))
        w, h = min(w, iw - x), min(h, ih - y)       # a webcam that changed its size under us
        region = img[y:y + h, x:x + w]
        gray = region if region.ndim == 2 else cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        size = output_size((x, y, w, h), self._stream)
        if size != (w, h):
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        exposure_us, certain = self._exposure.label(self._i)
        if not certain:
            self._unmetered.append(self._i)
        view = View((x, y, w, h), size, exposure_us, 1.0)
        if certain:
            view = self.loop.mark(view)                # a bracket's short frame, for the decoder
        return Frame(gray, t, self._i, view)

    def steer(self, frame: Frame, result: Any, active: bool, handled: Iterable[str] = ()) -> None:
        """After a decoded (or idle-skipped, result None) frame: the next crop and exposure.
        `handled`: texts of this frame's codes the station has handled (the loop lets go of them)."""
        if self.loop is None or self._cap is None or frame.view is None:
            return
        controls = self.loop.after_frame(frame, result, active, handled, meter=frame.index not in self._unmetered)
        if "ScalerCrop" in controls:
            self.crop = tuple(int(v) for v in controls["ScalerCrop"])   # software: the next frame
        if not self._exposure.apply(controls, self._i):
            self.loop.crop_only()

    def control_status(self) -> ControlStatus:
        if self.loop is None:
            return ControlStatus(self.cfg.control, self.mode, "fixed")
        state = self.loop.state
        if self._exposure.refused:
            state = f"{state}; exposure: the webcam's own ({self._exposure.refused})"
        return ControlStatus(self.cfg.control, self.mode, state, exposure_control=self._exposure.status)

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._exposure.restore()
            finally:
                self._cap.release()
                self._cap = None


class ExposureControl:
    """V4L2 manual exposure for the loop's ExposureTime x AnalogueGain, with what each frame got.
    The grabber's thread labels frames while the decoder's thread sets exposures: one lock."""

    def __init__(self, cap: Any, frame_us: float):
        self.cap, self.frame_us = cap, frame_us
        self.manual = False
        self.units: int | None = None           # last set, V4L2 units
        self.refused = ""                       # why the webcam keeps its own exposure
        self._auto_value = AE_APERTURE_PRIORITY
        #: (frame index it was set after, exposure us read back), newest last; _base before them
        self._sets: deque[tuple[int, int]] = deque(maxlen=8)
        self._base = 0
        self._readback = True                   # the webcam reports its exposure time
        self._stuck: set[bool] = set()        # sides asked while the read-back did not move
        self._lock = threading.RLock()

    @property
    def status(self) -> str:
        if self.refused:
            return f"refused: {self.refused}"
        return "manual" if self.manual else "webcam's auto until a code is located"

    def label(self, index: int) -> tuple[int, bool]:
        """(the exposure us frame `index` was taken with, whether that is certain): the webcam's
        own when automatic (as it reports it); when manual, what was set SETTLE_FRAMES before,
        uncertain when a latency of LATENCIES would give another value."""
        with self._lock:
            return self._label(index)

    def _label(self, index: int) -> tuple[int, bool]:
        if not self.manual:
            if not self._readback or self.cap is None:
                return 0, True
            try:
                value = float(self.cap.get(cv2.CAP_PROP_EXPOSURE))
            except (cv2.error, TypeError, ValueError):
                value = -1.0
            if value < 0:      # no such control: OpenCV would complain on stderr for every frame
                self._readback = False
                return 0, True
            return round(value * EXPOSURE_UNIT_US), True
        return self._at(index - SETTLE_FRAMES), len({self._at(index - n) for n in LATENCIES}) == 1

    def _at(self, index: int) -> int:
        """The exposure in effect for a frame after the sets made up to frame `index`."""
        return next((us for i, us in reversed(self._sets) if i <= index), self._base)

    def apply(self, controls: dict, index: int) -> bool:
        """Carry out the loop's exposure controls; False: the webcam refused (it is back on its
        own auto exposure, and stays there)."""
        with self._lock:
            return self._apply(controls, index)

    def _apply(self, controls: dict, index: int) -> bool:
        if self.refused or self.cap is None:
            return not self.refused
        if controls.get("AeEnable") is True:
            self._automatic()
            return True
        if "ExposureTime" not in controls:
            return True
        product = float(controls["ExposureTime"]) * float(controls.get("AnalogueGain", 1.0))
        units = max(1, round(min(product, self.frame_us) / EXPOSURE_UNIT_US))
        if self.manual and units == self.units:
            return True
        try:
            if not self.manual:
                # until the first exposure set lands, frames keep what the auto exposure had
                self._base, _ = self._label(index)
                self._sets.clear()
                before = float(self.cap.get(cv2.CAP_PROP_AUTO_EXPOSURE))   # -1: no such control
                if before >= 0 and before != AE_MANUAL:
                    self._auto_value = before
                if not self.cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, AE_MANUAL) \
                        or float(self.cap.get(cv2.CAP_PROP_AUTO_EXPOSURE)) != AE_MANUAL:
                    return self._refuse("no manual exposure: exposure_auto stays automatic")
                self.manual = True
            previous = float(self.cap.get(cv2.CAP_PROP_EXPOSURE))
            if not self.cap.set(cv2.CAP_PROP_EXPOSURE, units):
                return self._refuse(f"exposure_time_absolute {units} not accepted")
            got = float(self.cap.get(cv2.CAP_PROP_EXPOSURE))
        except cv2.error as exc:
            return self._refuse(str(exc))
        # a webcam clamps to its own range: frames get what it read back. One that ignores the
        # control reads back the same value whatever is asked: asks on both sides of it (a clamp
        # at an end of the range only ever sees asks beyond that end)
        if got == previous != units:
            self._stuck.add(units > got)
            if len(self._stuck) == 2:
                return self._refuse(f"exposure_time_absolute stays {got:g} whatever is asked")
        else:
            self._stuck.clear()
        self.units = units
        self._sets.append((index, round(got * EXPOSURE_UNIT_US)))
        return True

    def _automatic(self) -> None:
        if self.manual:
            try:
                self.cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, self._auto_value)
            except cv2.error as exc:
                log.warning("webcam: back to auto exposure failed: %s", exc)
        self.manual, self.units = False, None
        self._sets.clear()

    def _refuse(self, why: str) -> bool:
        self.refused = why
        log.warning("camera control auto: the webcam refused manual exposure (%s); it keeps its own "
                    "auto exposure, the crop still follows the code", why)
        self.manual = True               # whatever half-changed: ask for automatic again
        self._automatic()
        return False

    def restore(self) -> None:
        """Leave the webcam on auto exposure (V4L2 controls outlive the process); nothing more is
        set on this capture (the decoder's thread may still steer from a frame of it)."""
        with self._lock:
            if self.cap is not None and not self.refused:
                self._automatic()
            self.cap = None
