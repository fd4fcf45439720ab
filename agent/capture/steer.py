"""The closed capture loop (`[camera] control = "auto"`): the camera works for the decoder.

From each decoded frame (its own crop and exposure, from the camera's metadata) and what the
decoder located in it, decide the next controls:

- **Crop**: a located code (read or only located) gets a `ScalerCrop` around it with a margin, so
  its modules get up to 2-4x the pixels of the whole field; the crop follows the hand's tremor and
  goes back to the whole field when the code is lost for `LOST_S` or the scene is idle. A code
  located but not read whose QR version zxing-cpp read is whole (a far code at 2-3 pixels a
  module): it is zoomed onto as a read code is; a candidate without one may be a part of a code
  (a finder seen as a Micro QR) and is widened to the textured patch around it, never zoomed.
- **Exposure**: metered on the located code (its white modules at `WHITE_TARGET` of full scale),
  not on the room; a dim screen gets a longer exposure and more gain; exposure time is held short
  first (hand motion blurs a long one), then gain, then exposure again.
- **Idle cap**: until a code is located, the camera's own AE, but never longer than what brings
  the brightest phone screens to full scale (IDLE_BRIGHTEST_NITS, from the sensor's sensitivity):
  the AE meters the counter, and a phone then arrives many times over full scale.
- **Bracketing**: when modules inside the code are saturated (a lamp's reflection) while its white
  is well exposed, short frames (`depth` times shorter) alternate with normal ones: the decoder's
  fusion combines modules across frames of different crops and exposures (each frame carries its
  own, so modules map between frames). The cycle runs on what the frames' metadata says they got,
  not on what was asked: a short exposure is asked, and the normal one only once a short frame has
  arrived (however many frames the camera takes to apply controls, and a second request landing
  on the same frame cannot cancel the first); a short frame still clipped inside the code asks for
  a deeper one next time (see BRACKET). It goes on while the code is briefly not located: a
  reflection over a finder pattern hides the code in the normal frames, and the short ones are
  where it can be read.
- **Letting go**: a code the station has handled (checked in, already read, or rejected as not a
  card) has nothing more to give: the loop goes back to the whole field at once, and that code
  (followed by its place, as it moves with the hand) never wins the crop again while it stays in
  view. A sticker on the counter, a bystander's phone or the previous patient still holding up a
  card would otherwise keep the crop on itself, and the next patient, elsewhere, out of the view.

Pure logic on frames and their metadata: no camera, no clock (tests drive it directly).
Coordinates are the sensor's pixel array (libcamera's ScalerCrop convention).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from enum import StrEnum
from typing import Any

import cv2
import numpy as np

from agent.capture.source import Frame
from agent.capture.view import SATURATED, Seen, View

#: the code's side as a share of the crop's height (the rest is margin for the hand's tremor)
FILL = 0.6
#: the same for a code located but not read (zxing-cpp may have located only a part of it) or
#: a textured patch the loop found itself
FILL_LOCATED = 0.35
#: nothing located in the whole field but a still, code-like texture with a lamp's reflection in it
#: (GLARE_TRIAL_SHARE of it clipped, its white not: a reflection over a finder pattern hides the
#: code from zxing-cpp, and bracketing is what reads under it): try a crop on it this long,
#: then the whole field again for SEARCH_PAUSE_S before the next try; a trial whose patch shows
#: a reflection goes on while it does (bracketing is what reads a code under one), up to TRIAL_MAX_S
TRIAL_S = 0.5
#: Only such a patch: one without a reflection is nothing the loop can act on, and the fixed view's
#: whole field and auto exposure are then at least as good (a crop tried on any textured patch,
#: metered on it, lost more phones than it found on a second, independent virtual camera: the
#: texture was often the counter's; bench/README.md, issue 31)
GLARE_TRIAL_SHARE = 0.01
TRIAL_MAX_S = 2.0
SEARCH_PAUSE_S = 0.4
#: a code followed this long without being read: the crop widens back to the whole field, twice as
#: wide every UNREAD_WIDEN_S (half a second is 7-15 frames: fusion across frames and two or three
#: bracket cycles have had their chance in the crop)
UNREAD_HOLD_S = 0.5
UNREAD_WIDEN_S = 0.5
#: re-aim when the code's centre is this far (share of the crop) from the crop's centre
RECENTRE = 0.12
#: a located code lost this long: back to the whole field
LOST_S = 0.6
#: the white modules' target, linear share of full scale (leaves headroom under the clip)
WHITE_TARGET = 0.6
#: the first short exposure of a bracket, this many times shorter than the normal one; a short
#: frame still clipped inside the code makes the next DEEPEN times shorter, down to MAX_BRACKET
#: (a reflection of 20x the screen's white, with the white at WHITE_TARGET, peaks at 12.6x full
#: scale; at 1/24 the white is still 2.5% of full scale, 50 of 255 after the tone curve)
BRACKET = 12.0
DEEPEN = 2.0
MAX_BRACKET = 32.0
#: a short frame with more than this share of the box still clipped goes deeper (a few modules'
#: worth: the reflection's core hides a finder pattern; a lamp beside the box, which clips at any
#: exposure, does not count)
STILL_CLIPPED = 0.0005
#: short frames in a row still clipped at a depth before the next goes deeper. An exposure of a
#: fraction of a millisecond under a lamp on 50 Hz mains (its light pulses at 100 Hz, by up to its
#: full output with a cheap LED driver: IEEE 1789-2015) or a phone dimmed by PWM (240-480 Hz, up to
#: 3840 Hz) is read out row by row by a rolling shutter while the light changes: horizontal bands,
#: some rows brighter than the mean. Their phase moves from frame to frame (the frame rate is not
#: locked to the mains), so one banded frame clipped in its bright rows says little of the next.
CLIPPED_FRAMES = 2
#: normal frames seen between two short runs (each run lasts as long as the camera takes to
#: apply the normal exposure again: 2-3 frames with libcamera)
NORMAL_RUN = 2
#: a control asked this many decoded frames ago and not seen in any frame: ask again
RESEND_FRAMES = 6
#: share of the code's pixels saturated (with its white not saturated) that starts bracketing
BRACKET_GLARE_SHARE = 0.01
#: glare is looked for this far around the box too (a share of its size on each side)
GLARE_MARGIN = 0.5
#: stay bracketing this long after glare was last seen
BRACKET_HOLD_S = 1.0
#: the crop is set again only when the size it should have differs from the current one by more
#: than this ratio either way (and the code is still inside and near its centre: RECENTRE): the
#: hand's sway changes the code's apparent size by a few percent a frame, and each new crop costs
#: 2-3 frames of latency and a jump the decoder's fusion must map across
RESIZE_RATIO = 1.33
#: a frame is a bracket's short one when its exposure x gain is this many times under the normal
#: one: the mildest bracket is BRACKET (12) times shorter, while exposure lines, gain steps and the
#: normal exposure's own adjustments (EXPOSURE_DEADBAND) stay well within 2.5x
SHORT_BELOW = 2.5
#: a short frame was taken at the current depth when its exposure is within this ratio of
#: normal / depth (exposure lines and gain steps; a frame from a shallower run is not)
AT_DEPTH = 1.25
#: a clipped white tells only that the exposure is too long, not by how much: the next exposure is
#: this many times shorter (from up to 5x over, the white is back under the clip in two frames)
CLIPPED_BACKOFF = 3.0
#: a new normal exposure within this (natural log: about 20%) of the current one is not asked:
#: metering noise and the hand's sway would otherwise change it every frame, each change landing
#: 2-3 frames late
EXPOSURE_DEADBAND = 0.18
#: a textured patch that moved less than this share of its size between two frames is still
STILL_PATCH_MOVE = 0.15
#: Back to the camera's own auto exposure, said every way a libcamera camera may need it: AeEnable;
#: ExposureTimeMode and AnalogueGainMode Auto (0) where advertised (libcamera 0.5 and later, where
#: AeEnable is their shorthand); and ExposureTime and AnalogueGain 0, which clear the fixed values
#: (a Raspberry Pi IPA's setFixedExposureTime(0) means "not fixed"; a camera that keeps applying
#: set values while both are non-zero, as the second virtual camera does, would otherwise stay at
#: the last presentation's exposure: a bright phone after a dim one was white, never located, and
#: never metered). A source sends only the controls its camera advertises.
AUTO_EXPOSURE = {"AeEnable": True, "ExposureTimeMode": 0, "AnalogueGainMode": 0, "ExposureTime": 0,
                 "AnalogueGain": 0.0}
#: the loop's own exposure: manual time and gain (the modes where advertised)
MANUAL_EXPOSURE = {"AeEnable": False, "ExposureTimeMode": 1, "AnalogueGainMode": 1}
#: libcamera's AfMetering: Auto (the AF algorithm's own window) and Windows (AfWindows, in the
#: sensor's ScalerCropMaximum pixels: the pixel array's, as ScalerCrop); a source sends them only
#: where the camera advertises them (Camera Module 3; a fixed-focus module has no AF controls)
AF_METERING_AUTO, AF_METERING_WINDOWS = 0, 1
#: the AF window follows the code when it has moved by this share of its size (the hand's sway;
#: each change restarts the AF's confidence-weighted estimate)
FOCUS_MOVE = 0.25
#: exposure time first up to this (hand tremor blur), then gain up to GAIN_STEP, then time again
SHORT_US = 8000
GAIN_STEP = 4.0
MAX_GAIN = 16.0
LONG_US = 30000
#: a handled code, or a candidate at its place, not seen this long is forgotten (it has left the
#: view): a new phone shown there may win the crop again. Longer than the gaps in which a code in
#: view is not located (a reflection crossing a finder), shorter than a patient takes to lower one
#: phone and raise the next (1.5 s and more at a counter)
HANDLED_FORGET_S = 1.0
#: a candidate whose centre lies within a handled code's box widened by this share of its size on
#: each side is that code (the hand sways it by 4-10 mm a second, up to a fifth of a 4-5 cm code)
HANDLED_MARGIN = 0.25
#: the search for a textured patch leaves out this share of a handled code's size on each side of
#: it: the rest of the phone showing it (a VssID card screen puts text, a photo and the card's
#: frame around the code, about 1.6 code sides wide and 3 tall) is not a new code either
HANDLED_PHONE = 1.0
#: more of the code than this clipped: its white is (a reflection alone covers less)
WHITE_SATURATED = 0.35
GAMMA = 2.2      # the Y plane's tone curve, close to the Pi ISP's default
#: Exposure x gain (us) at which one cd/m^2 reaches the sensor's full scale, per camera model: the
#: IMX708 of Camera Module 3 (standard and NoIR: the same f/1.8 lens), from the Raspberry Pi 5
#: tuning's lux reference (rpi.lux in imx708.json: 20716 us x gain 1.12 gives Y 13994/65536 at
#: 810 lux, an 18% grey card: L = E rho / pi = 46 cd/m^2, so 46 x 23202 / 0.2135 = 5.0e6). A
#: model not listed (another sensor or lens) keeps the camera's own auto exposure at idle.
FULL_SCALE_NIT_US = {"imx708": 5.0e6, "imx708_noir": 5.0e6}
#: The idle cap: while no code is located, the exposure is never longer than what brings the white
#: of the brightest phone screens patients show to full scale. A phone screen emits its own light
#: (about 80-650 cd/m^2 at the brightness patients use: measured maxima of 400-700 in manual mode,
#: the slider roughly quadratic), whatever the counter's; the camera's auto exposure meters the
#: counter (5-40 cd/m^2 on a dark top under 150-500 lux), and after it a phone arrived 5-30x over
#: full scale and stayed unlocatable while the AE came down (0.3-1.3 s on the second camera). A
#: white clipped even 1.5x is no better: the lens' blur spreads it over the dark modules of a far,
#: dense code (2-3 pixels a module), which are then not located at all. At the cap no screen clips,
#: an 80 cd/m^2 one sits at 0.12 of full scale (locatable; the metering then exposes it properly).
IDLE_BRIGHTEST_NITS = 650.0
#: hysteresis of the cap: capped when the AE goes this much over it, the AE resumed when it would
#: stay this much under it (a bright room, where the AE itself exposes for screens)
CAP_MARGIN = 1.25
#: the camera's AE target: the mean of the (linear) frame it aims at (the Pi tuning's y_target)
AE_TARGET = 0.16


def linear(level):
    """Light from a Y level (a number or an array of them), through the tone curve."""
    return (np.clip(level, 0.0, 255.0) / 255.0) ** GAMMA


def split(product: float, frame_us: float) -> tuple[int, float]:
    """(exposure us, analogue gain) for an exposure x gain product: short first, then gain."""
    t = min(product, SHORT_US)
    if product / t > GAIN_STEP:
        t = min(product / GAIN_STEP, LONG_US, frame_us)
    t = max(t, 30.0)
    gain = min(max(product / t, 1.0), MAX_GAIN)
    if product / t > MAX_GAIN:
        t = min(product / MAX_GAIN, frame_us)
    return int(t), float(gain)


class Aim(StrEnum):
    """Where the crop is and why (shown in `status` as the loop's state)."""
    FULL_FIELD = "full field"                  # searching: nothing to follow
    IN_FIELD = "code in whole field"           # a code to follow that fills the field already
    FOLLOWING = "following code"               # a crop on a code read or located
    PATCH = "trying a textured patch"          # a crop on code-like texture nothing located


class Ask(StrEnum):
    """The exposure last asked for."""
    NORMAL = "normal"                          # for the screen's white
    SHORT = "short"                            # a bracket's: normal / depth


class CaptureLoop:
    def __init__(self, array: tuple[int, int], size: tuple[int, int], native_bin: int = 1,
                 frame_us: float = 70_000):
        self.array, self.size, self.bin, self.frame_us = array, size, native_bin, frame_us
        self.full = (0, 0, array[0], array[1])
        self.crop = self.full                  # last commanded
        #: exposure x gain under which a frame is a bracket's short one (normal / SHORT_BELOW; None:
        #: no bracket): the one value of the loop the capture thread reads (mark())
        self.short_below: float | None = None
        self._normal: float | None = None      # exposure x gain product for the screen; None: AE
        self.bracket_until = -1.0
        self.depth = BRACKET                   # the short exposure is normal / depth
        self._clipped = 0                      # short frames in a row still clipped at this depth
        self._asked = Ask.NORMAL                # the exposure last asked for
        self._since_ask = 0                    # decoded frames since
        self._normals = 0                      # normal frames seen since the last short run
        self._box: np.ndarray | None = None    # the code's box last metered, array pixels
        self.last_seen = -1e9
        self.aim = Aim.FULL_FIELD
        self.bracketing = False
        self.trial_until = -1.0
        self._trial_end = -1.0
        self.search_after = -1.0
        self._patch: np.ndarray | None = None
        self._unread_since: float | None = None     # following a code not read since
        self._focus_box: np.ndarray | None = None   # the AF window set (x0, y0, x1, y1), array pixels
        #: codes the station has handled: [box in array pixels, last seen] (see Letting go)
        self._handled: list[list] = []
        #: False: crop only, the camera keeps its own auto exposure (a webcam that refuses manual
        #: exposure: agent/capture/v4l2.py)
        self.exposure = True
        #: the most analogue gain the camera gives (a webcam's exposure time alone: 1)
        self.max_gain = MAX_GAIN
        #: zoom onto a whole code located but not read as onto a read one (measured on picamera2)
        self.zoom_whole = True
        #: the idle cap's exposure x gain (None: no cap, the camera's AE at idle): see idle_cap_for
        self.idle_cap: float | None = None
        self._capped = False                   # the idle cap is what was last asked

    @property
    def state(self) -> str:
        """The loop's state in a few words, for `status` and snapshots."""
        return f"{self.aim}, bracketing" if self.bracketing else str(self.aim)

    def crop_only(self) -> None:
        """The camera refused exposure control: keep to the crop, stop metering and bracketing."""
        self.exposure, self.normal, self.bracket_until, self._asked = False, None, -1.0, Ask.NORMAL

    # -- crop ----------------------------------------------------------------------------------

    def crop_for(self, box: np.ndarray, fill: float = FILL) -> tuple[int, int, int, int]:
        """A crop of the stream's aspect around a code (array corners), with a margin."""
        return self._place(box.mean(0), self._width_for(max(np.ptp(box[:, 0]), np.ptp(box[:, 1])), fill))

    def _width_for(self, side: float, fill: float) -> float:
        w = side / fill * self.size[0] / self.size[1]
        return max(w, self.size[0] * self.bin)             # no finer than the sensor's own pixels

    def _place(self, centre: np.ndarray, w: float) -> tuple[int, int, int, int]:
        """A crop `w` wide (the stream's aspect, inside the array) centred on `centre`."""
        aspect = self.size[0] / self.size[1]
        w = min(w, self.array[0])
        h = min(w / aspect, self.array[1])
        w = h * aspect
        cx, cy = centre
        x = min(max(cx - w / 2, 0), self.array[0] - w)
        y = min(max(cy - h / 2, 0), self.array[1] - h)
        return (int(x) & ~1, int(y) & ~1, int(w) & ~1, int(h) & ~1)

    def _needs_move(self, view: View, box: np.ndarray, target: tuple[int, int, int, int]) -> bool:
        x, y, w, h = self.crop
        if self.crop == self.full and target != self.full:
            return True
        cx, cy = box.mean(0)
        off = max(abs(cx - (x + w / 2)) / w, abs(cy - (y + h / 2)) / h)
        ratio = target[2] / w
        inside = box[:, 0].min() > x and box[:, 0].max() < x + w and box[:, 1].min() > y and box[:, 1].max() < y + h
        return off > RECENTRE or not 1 / RESIZE_RATIO < ratio < RESIZE_RATIO or not inside

    # -- exposure ------------------------------------------------------------------------------

    def _meter(self, gray: np.ndarray, view: View, frame_box: np.ndarray) -> tuple[float | None, float, bool, float]:
        """(screen white per unit of exposure x gain or None, share saturated in and around the
        box, white saturated?, share saturated in the box)"""
        region = gray[_slices(frame_box, gray.shape)]
        if region.size < 64:
            return None, 0.0, False, 0.0
        region = region[::2, ::2] if region.size > 40000 else region
        saturated = clipped = float((region >= SATURATED).mean())
        product = max(view.exposure_us * view.gain, 1.0)
        if saturated > WHITE_SATURATED:          # the screen's white itself is clipped
            return None, saturated, True, clipped
        # a reflection next to the box counts too: the box may be a part of the code (one finder
        # located), and a reflection over the rest is what keeps the code from being located
        margin = GLARE_MARGIN * (frame_box.max(0) - frame_box.min(0))
        around = gray[_slices(frame_box, gray.shape, margin, step=2)]
        saturated = max(saturated, float((around >= SATURATED).mean()))
        # the light modules: the median of what is above the mid level, without the clipped
        # pixels of a reflection (its rim is a minority of the light modules)
        vals = region[region < SATURATED].astype(np.float32)
        lo, hi = np.percentile(vals, [5, 95])
        light = vals[vals > (lo + hi) / 2]
        if light.size < 16 or hi - lo < 8:
            return None, saturated, False, clipped
        return float(linear(np.median(light))) / product, saturated, False, clipped

    def _controls_for(self, product: float) -> dict:
        t, g = split(product, self.frame_us)
        return {**MANUAL_EXPOSURE, "ExposureTime": t, "AnalogueGain": g}

    # -- the loop ------------------------------------------------------------------------------

    def update(self, t: float, gray: np.ndarray | None, view: View, seen: Seen, active: bool,
               meter: bool = True) -> dict:
        """The controls to set after this frame ({} for none). `seen`: what the decoder saw in it
        (agent.capture.view.Seen): codes read and not yet handled, and candidates located but not
        read, are followed; whole codes among the located are zoomed onto as a read code is (too
        few pixels per module to read, not a part of a code); codes the station has handled are
        let go (see Letting go). `meter=False`: the camera cannot say which exposure this frame
        got (a webcam just after a change): not metered."""
        controls: dict = {}
        if not active or gray is None:
            self._reset(controls)
            return controls if gray is None else self._idle_exposure(gray, view, controls)
        self._forget_handled(t)
        if seen.handled:
            self._let_go(t, view, seen.handled)
        read = seen.read
        located = self._unhandled(t, view, seen.located)
        whole = self._unhandled(t, view, seen.whole)
        sized = bool(whole) and not read
        boxes, fill = (read, FILL) if read else (whole, FILL) if sized else (located, FILL_LOCATED)
        if boxes:
            self.last_seen, self.trial_until = t, -1.0
        elif (self.crop == self.full and t >= self.search_after
              and (found := self._still_patch(gray, self._handled_in(view))) is not None
              and self._reflection_on(gray, view, found)):
            boxes, fill = [found], FILL          # the patch is the phone: already a margin
            self.trial_until, self.search_after = t + TRIAL_S, t + TRIAL_S + SEARCH_PAUSE_S
            self._trial_end = t + TRIAL_MAX_S
        elif t < self.trial_until or t - self.last_seen <= LOST_S:
            # held: the crop stays; the exposure cycle goes on, on the box last seen (a reflection
            # over a finder pattern hides the code in the normal frames of a bracket)
            if self.exposure and self.normal is not None and self._box is not None and meter:
                # the box last seen may hold something else now: only the bracket cycle runs on
                # it, the normal exposure is not changed from it
                _, glare, _, clipped = self._meter(gray, view, view.from_array(self._box))
                self._expose(t, view, None, glare, clipped, False, controls)
                if t < self.trial_until and t < self.bracket_until:   # a reflection on the patch
                    self.trial_until = min(max(self.trial_until, t + TRIAL_S), self._trial_end)
                    self.search_after = self.trial_until + SEARCH_PAUSE_S
            return controls
        else:
            return self._idle_exposure(gray, view, self._reset(controls))
        frame_box = max(boxes, key=lambda b: np.ptp(b[:, 0]) * np.ptp(b[:, 1]))
        if not read:
            # candidates close to the largest are most likely parts of the same code (a reflection
            # splits what zxing-cpp locates): the crop frames them all, not one part
            frame_box = _near_union(frame_box, (located or []) + (whole or []))
        if not read and not sized and located and self.crop == self.full:
            # zxing-cpp often locates a part of a code it cannot read (one finder's worth, as a
            # Micro QR): the textured patch around the candidate is the code's real extent
            patch = textured_box(gray, self._handled_in(view))
            if patch is not None and _inside(frame_box.mean(0), patch):
                frame_box, fill = _union(frame_box, patch), FILL
        box = view.to_array(frame_box)
        target = self.crop_for(box, fill)
        if not read and not sized and self.crop != self.full and target[2] < self.crop[2]:
            # an unread candidate never zooms further in: it may be a part of the code
            target = self._place(box.mean(0), self.crop[2])
        target = self._widen_unread(t, box, target, bool(read))
        if self._needs_move(view, box, target):
            self.crop = target
            controls["ScalerCrop"] = target
        if read or located or sized:
            self._focus(box, controls)
        self.aim = (Aim.FOLLOWING if read or located else Aim.PATCH) if self.crop != self.full else Aim.IN_FIELD
        self.bracketing = False
        if not self.exposure:
            return controls

        self._box = box
        if not meter:       # the camera cannot say which exposure this frame got
            return controls
        white, glare, white_saturated, clipped = self._meter(gray, view, frame_box)
        self._expose(t, view, white, glare, clipped, white_saturated, controls)
        return controls

    def after_frame(self, frame: Frame, result: Any, active: bool, handled: Iterable[str] = (),
                    meter: bool = True) -> dict:
        """What every source that steers does after a decoded (or idle-skipped: result None) frame:
        the controls for what the decoder saw in it (a DecodeResult) and the codes the station has
        handled (their texts). The source carries them out as its camera allows."""
        seen = Seen.of(result, handled)
        if not self.zoom_whole:
            seen = replace(seen, whole=[])
        return self.update(frame.t, frame.gray if result is not None else None, frame.view, seen,
                           active and result is not None, meter)

    def mark(self, view: View) -> View:
        """The view, marked when it is a bracket's short frame (its exposure from its metadata), for
        the decoder. Called from the capture thread: it reads only `short_below`, one float the
        station's thread replaces whole."""
        limit = self.short_below
        product = view.exposure_us * view.gain
        return replace(view, short=True) if limit is not None and 0 < product < limit else view

    @property
    def normal(self) -> float | None:
        """The exposure x gain for the screen (None: the camera's own auto exposure)."""
        return self._normal

    @normal.setter
    def normal(self, value: float | None) -> None:
        self._normal = value
        self.short_below = None if value is None else value / SHORT_BELOW

    def is_short(self, view: View) -> bool:
        """Whether a frame was taken with a bracket's short exposure (from its metadata)."""
        return self.mark(view).short

    def _expose(self, t: float, view: View, white: float | None, glare: float, clipped: float,
                white_saturated: bool, controls: dict) -> None:
        """The exposure after a metered frame: the normal one from the screen's white, and the
        bracket cycle, driven by the exposure this frame really got (its metadata). `glare`:
        share clipped in and around the box; `clipped`: in it."""
        # a camera that does not say what a frame got (0: a webcam without read-back) is metered
        # as if at 1 us: the first exposure asked is then a probe, and frames say what they got
        product = max(view.exposure_us * view.gain, 1.0)
        short = self.is_short(view)
        new = None
        if short:
            # still clipped inside the code at this depth, in CLIPPED_FRAMES short frames in a row:
            # the next short run goes deeper (one frame alone is not trusted: see CLIPPED_FRAMES)
            if product <= AT_DEPTH * self.normal / self.depth:
                self._clipped = self._clipped + 1 if clipped > STILL_CLIPPED else 0
                if self._clipped >= CLIPPED_FRAMES:
                    self.depth, self._clipped = min(self.depth * DEEPEN, MAX_BRACKET), 0
        elif white_saturated:
            new = product / CLIPPED_BACKOFF
        elif white is not None:
            new = WHITE_TARGET / white
        if new is not None:        # no more than the camera can give (a dim screen, a webcam)
            new = min(new, self.frame_us * self.max_gain)
        if not short and not white_saturated and glare > BRACKET_GLARE_SHARE:
            self.bracket_until = t + BRACKET_HOLD_S
        changed = new is not None and (self.normal is None or abs(math.log(new / self.normal)) > EXPOSURE_DEADBAND)
        if changed:
            self.normal = new
        if self.normal is None:
            return
        self._since_ask += 1
        if t < self.bracket_until:
            self.bracketing = True
            if self._asked is Ask.SHORT:
                if short or self._since_ask > RESEND_FRAMES:     # it has landed (or was lost)
                    self._ask(Ask.NORMAL, controls)
            else:
                self._normals += not short
                if self._normals >= NORMAL_RUN:
                    self._ask(Ask.SHORT, controls)
                elif changed or self._since_ask > RESEND_FRAMES:
                    self._ask(Ask.NORMAL, controls)
            return
        self.depth, self._clipped = BRACKET, 0
        if changed or self._asked is Ask.SHORT or (short and self._since_ask > RESEND_FRAMES):
            self._ask(Ask.NORMAL, controls)

    def _ask(self, kind: Ask, controls: dict) -> None:
        assert self.normal is not None
        self._asked, self._since_ask = kind, 0
        if kind is Ask.SHORT:
            self._normals = 0
        controls.update(self._controls_for(self.normal / self.depth if kind is Ask.SHORT else self.normal))

    # -- letting go of handled codes -----------------------------------------------------------

    def _let_go(self, t: float, view: View, handled: list[np.ndarray]) -> None:
        """Codes the station has handled: remembered by their place (array pixels), and the crop
        and exposure that followed them go back to the whole field now (nothing held, no trial)."""
        for corners in handled:
            box = view.to_array(corners)
            i = self._handled_index(box)
            if i is None:
                self._handled.append([box, t])
            else:
                self._handled[i] = [box, t]
        # nothing holds the crop on it: unless another candidate wins this frame, the whole field
        self.last_seen = self.trial_until = -1e9

    def _handled_index(self, box: np.ndarray) -> int | None:
        """The handled code at `box`'s place (its centre inside the handled box, widened), or None."""
        centre = box.mean(0)
        for i, (known, _) in enumerate(self._handled):
            margin = HANDLED_MARGIN * (known.max(0) - known.min(0))
            if np.all(centre >= known.min(0) - margin) and np.all(centre <= known.max(0) + margin):
                return i
        return None

    def _unhandled(self, t: float, view: View, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """The candidates (stream corners) that are not a handled code; one that is, keeps it
        remembered (a code handled when read up close is only located in the whole field)."""
        keep = []
        for corners in boxes:
            i = self._handled_index(view.to_array(corners)) if self._handled else None
            if i is None:
                keep.append(corners)
            else:
                self._handled[i][1] = t
        return keep

    def _forget_handled(self, t: float) -> None:
        self._handled = [h for h in self._handled if t - h[1] <= HANDLED_FORGET_S]

    def _handled_in(self, view: View) -> list[np.ndarray]:
        """The handled codes' phones in this frame's stream pixels: kept out of the search."""
        out = []
        for box, _ in self._handled:
            corners = view.from_array(box)
            margin = HANDLED_PHONE * (corners.max(0) - corners.min(0))
            out.append(_union(corners - margin, corners + margin))
        return out

    def _reflection_on(self, gray: np.ndarray, view: View, patch: np.ndarray) -> bool:
        """A lamp's reflection on a patch: some of it clipped, its white not (as _meter sees it)."""
        _, _, white_saturated, clipped = self._meter(gray, view, patch)
        return not white_saturated and clipped > GLARE_TRIAL_SHARE

    def _still_patch(self, gray: np.ndarray, exclude: list[np.ndarray] | None = None) -> np.ndarray | None:
        """A textured patch found in two successive frames at the same place: a phone that has
        stopped moving (a crop on one still sliding into view would miss it)."""
        found, previous = textured_box(gray, exclude), self._patch
        self._patch = found
        if found is None or previous is None:
            return None
        size = max(np.ptp(found[:, 0]), np.ptp(found[:, 1]))
        if np.abs(found - previous).max() > STILL_PATCH_MOVE * size:
            return None
        return found

    def _widen_unread(self, t: float, box: np.ndarray, target: tuple[int, int, int, int],
                      read: bool) -> tuple[int, int, int, int]:
        """A crop that has followed a code for UNREAD_HOLD_S without reading it widens step by step
        back to the whole field (2x every UNREAD_WIDEN_S): the box it was set on may be a part of
        the code, or a tilted code's corner may lie outside it, and the fixed view's whole field is
        then the better chance (on the second virtual camera a close, tilted phone was held in a
        crop for 1.7 s that the whole field read at once)."""
        if read:
            self._unread_since = None
            return target
        if self._unread_since is None:
            self._unread_since = t
        over = t - self._unread_since - UNREAD_HOLD_S
        if over <= 0:
            return target
        return self._place(box.mean(0), target[2] * 2 ** (over / UNREAD_WIDEN_S))

    def _focus(self, box: np.ndarray, controls: dict) -> None:
        """Autofocus on the code (AfMetering Windows, AfWindows its box), not on the middle of the
        crop: the default AF window is the middle of the field (about half its width, a third of
        its height on a Pi), where an off-centre phone is not, and the counter behind it is 30-40
        cm further; a continuous-AF lens that meters the wrong region hunts as the crop moves.
        Set again only when the code has moved by FOCUS_MOVE of its size."""
        lo, hi = box.min(0), box.max(0)
        if self._focus_box is not None:
            size = max(hi - lo)
            if np.abs(np.concatenate([lo, hi]) - self._focus_box).max() <= FOCUS_MOVE * size:
                return
        self._focus_box = np.concatenate([lo, hi])
        x, y = (max(int(v), 0) for v in lo)
        controls["AfMetering"] = AF_METERING_WINDOWS
        controls["AfWindows"] = [(x, y, max(int(hi[0]) - x, 2), max(int(hi[1]) - y, 2))]

    def _reset(self, controls: dict) -> dict:
        self._unread_since = None
        self.trial_until = -1.0
        if self._focus_box is not None:
            self._focus_box = None
            controls["AfMetering"] = AF_METERING_AUTO
        if self.crop != self.full:
            self.crop = self.full
            controls["ScalerCrop"] = self.full
        if self.normal is not None:
            self.normal = None
            if self.idle_cap is not None and self.exposure:
                controls.update(self._controls_for(self.idle_cap))   # the next phone: see IDLE_BRIGHTEST_NITS
                self._capped = True
            else:
                controls.update(AUTO_EXPOSURE)
        self.bracket_until, self.depth, self._asked, self._normals, self._box = -1.0, BRACKET, Ask.NORMAL, 0, None
        self._clipped = 0
        self.aim, self.bracketing = Aim.FULL_FIELD, False
        return controls


    def _idle_exposure(self, gray: np.ndarray, view: View, controls: dict) -> dict:
        """No code located: the camera's AE, but never longer than the idle cap (IDLE_BRIGHTEST_NITS),
        from what this frame got (its metadata) and how bright it is."""
        if self.idle_cap is None or not self.exposure or self.normal is not None or "ScalerCrop" in controls:
            return controls
        product = view.exposure_us * view.gain
        if product <= 0:
            return controls
        if not self._capped:
            if product > self.idle_cap * CAP_MARGIN:
                controls.update(self._controls_for(self.idle_cap))
                self._capped = True
        elif product <= self.idle_cap * CAP_MARGIN:
            # what the AE would choose here: a room bright enough to expose screens by itself
            mean = float(np.mean(linear(gray[::8, ::8].astype(np.float32))))
            if product * AE_TARGET / max(mean, 1e-4) < self.idle_cap / CAP_MARGIN:
                controls.update(AUTO_EXPOSURE)
                self._capped = False
        return controls


def idle_cap_for(model: str | None) -> float | None:
    """The idle cap's exposure x gain for a camera model (picamera2's camera_properties["Model"]),
    None for a model whose sensitivity is not known here."""
    full = FULL_SCALE_NIT_US.get(str(model or ""))
    return None if full is None else full / IDLE_BRIGHTEST_NITS


#: a textured patch (in the quarter-size edge mask) is code-like when at least this many pixels a
#: side (48 stream pixels: a 21-module code at 2 px a module), no more than this elongated (a code
#: seen at up to 60 degrees of tilt; a line of text is more), and this solid (a code's modules fill
#: its square; a scatter of objects' edges does not)
PATCH_MIN_PX = 12
PATCH_ASPECT = 2.5
PATCH_SOLID = 0.4


def textured_box(gray: np.ndarray, exclude: list[np.ndarray] | None = None) -> np.ndarray | None:
    """The most code-like patch of a frame in which the decoder located nothing (a code too
    small for its finder patterns to be found, or one whose finder a reflection hides): dense
    edges in a compact, square-ish blob, outside the `exclude` boxes (stream corners: codes
    already handled). Corners in stream pixels, or None. About 3 ms for 1280x720 on a PC: it runs
    only while the whole field shows an unlocated, changing scene."""
    h, w = gray.shape
    small = cv2.resize(gray, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    mag = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1))
    energy = cv2.blur(mag, (5, 5))
    mask = (energy > max(4 * float(np.median(energy)), 40.0)).astype(np.uint8)
    for box in exclude or []:
        mask[_slices(box / 4, mask.shape)] = 0
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((7, 7), np.uint8))   # no thin edges
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    best = None
    for x, y, bw, bh, area in stats[1:]:
        if min(bw, bh) < PATCH_MIN_PX or max(bw, bh) > PATCH_ASPECT * min(bw, bh) or area < PATCH_SOLID * bw * bh:
            continue
        if best is None or area > best[4]:
            best = (x, y, bw, bh, area)
    if best is None:
        return None
    x, y, bw, bh, _ = best
    return np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], np.float64) * 4


def _inside(p: np.ndarray, box: np.ndarray) -> bool:
    return bool(box[:, 0].min() <= p[0] <= box[:, 0].max() and box[:, 1].min() <= p[1] <= box[:, 1].max())


def _slices(box: np.ndarray, shape: tuple[int, ...], margin: np.ndarray | float = 0.0,
            step: int = 1) -> tuple[slice, slice]:
    """The rows and columns of a frame of `shape` that a box (corners, stream pixels) covers,
    widened by `margin` on each side, clipped to the frame."""
    h, w = shape[:2]
    x0, y0 = np.clip(np.floor(box.min(0) - margin), 0, [w - 1, h - 1]).astype(int)
    x1, y1 = np.clip(np.ceil(box.max(0) + margin), 1, [w, h]).astype(int)
    return slice(y0, y1, step), slice(x0, x1, step)


def _near_union(box: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """`box` and every other box whose centre is within its size of `box`'s centre, as one box."""
    size = max(np.ptp(box[:, 0]), np.ptp(box[:, 1]))
    for other in others:
        if np.abs(other.mean(0) - box.mean(0)).max() <= size:
            box = _union(box, other)
    return box


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(a.min(0), b.min(0)), np.maximum(a.max(0), b.max(0))
    return np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]], np.float64)
