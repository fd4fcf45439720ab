"""QR decoding for phone screens: zxing-cpp first, then a cascade of OpenCV preprocessing.

`decode(frame)` reads one frame. `FrameReader` is for the camera loop: it spreads the
expensive strategies over successive frames (a phone is held up for many frames), so each
frame costs little more than plain zxing-cpp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import zxingcpp

from agent.capture.view import View
from agent.decode import finders, grid, guidance
from agent.decode.strategies import DEFAULT_ORDER, GLARE_STRATEGY, STRATEGIES, STREAM_ORDER, Strategy, clahe

QR = zxingcpp.BarcodeFormat.QRCode
#: The symbols whose reads are texts: QR model 2 (zxing-cpp 3 reports it as QRCode), the format of
#: every card and payment code. Micro QR and rMQR are looked for only to locate a model 2 code
#: (see _read): an M1 Micro QR has no error correction at all, two codewords of detection only,
#: so the corner of a card half out of the frame, or a patch of random modules, rectified, "reads"
#: as a few digits: a red while a card is shown (bench/miscorrect.py: 2 in 10,000 frames of
#: texture and damaged codes, both M1, both through rectification).
READ_FORMATS = frozenset({QR, getattr(zxingcpp.BarcodeFormat, "QRCodeModel2", QR)})
#: The text as the code holds it (bytes transcoded by their ECI or guessed charset). zxing-cpp's
#: default (HRI) writes a control character as its name when the content is binary: a QR with an
#: ESC or a tab read 'AB<ESC>CD', five characters the card never had, into the check-in and the
#: HIS. Control characters are the station's to judge (agent.cards, agent.outputs), not the reader's.
TEXT = zxingcpp.TextMode.Plain
Corners = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]

#: Cascade budget, in multiples of this frame's own plain zxing-cpp time (machine independent;
#: see SLOW_FRAME_X). bench/decode.py --budgets shows what each budget reads and costs.
DEFAULT_BUDGET_X = 10.0
MAX_CANDIDATES = 3
#: Share of the budget spent looking for more codes once one is read (a phone shows one code;
#: a frame with several is rare, and a false candidate must not cost the whole budget).
MORE_CODES_SHARE = 0.5

#: The gate's second look when the plain read located nothing: half size, one global threshold,
#: no inverted pass. About a tenth of a plain read; it locates some blurred or veiled codes
#: whose finder patterns the full-size detector missed (+2 hard simulated frames of 60).
GLANCE = "glance"

#: A frame whose plain read took longer than this multiple of the typical time (a busy texture
#: such as a monitor's moiré makes zxing-cpp chase hundreds of false finder patterns) is
#: budgeted from the typical time: a budget in multiples of its own slow read would stall
#: the camera loop for nothing.
SLOW_FRAME_X = 2.0


#: The strategies of the second stage: our own Reed-Solomon reading of a sampled grid with
#: erasures ("bitlevel"), of a grid fused over frames ("fused"), or of a grid behind an inferred
#: hidden finder ("finders"). They read what zxing-cpp only located, so they are also where a
#: miscorrection can come from (a badly sampled grid that happens to decode, every block within
#: its margin): the station confirms what only they read before it shows red
#: (agent/checkin/presentation.py). Every other strategy is zxing-cpp's own read of a view.
SECOND_STAGE = frozenset({"bitlevel", "fused", "finders"})


@dataclass(frozen=True)
class Code:
    text: str
    raw: bytes
    #: top-left, top-right, bottom-right, bottom-left, in frame pixels
    corners: Corners
    strategy: str

    @property
    def center(self) -> tuple[float, float]:
        xs, ys = zip(*self.corners)
        return sum(xs) / 4, sum(ys) / 4

    @property
    def second_stage(self) -> bool:
        """Read by the second stage alone (SECOND_STAGE), not by zxing-cpp."""
        return self.strategy in SECOND_STAGE


@dataclass
class DecodeResult:
    codes: list[Code] = field(default_factory=list)
    #: zxing found something code-like it could not read (hold on, the patient may need to tilt)
    candidates: int = 0
    strategies_run: list[str] = field(default_factory=list)
    ms: float = 0.0
    #: when nothing was read: (corners, modules a side or None) of the located candidates, and
    #: why they were not read (agent.decode.guidance: closer, glare, dim, still, unknown)
    located: list[tuple[Corners, int | None]] = field(default_factory=list)
    guidance: str | None = None
    #: corners of everything located but not read, fusion tracks included (the capture loop crops
    #: onto them: agent.capture.view.Seen)
    unread: list[np.ndarray] = field(default_factory=list)


def _at(pts: np.ndarray, found: list[tuple[np.ndarray, Any]]) -> Any:
    """What zxing-cpp said of the located symbol at these corners (centres within a quarter of
    its size), or None."""
    size = _size(pts)
    for other, value in found:
        if np.linalg.norm(other.mean(0) - pts.mean(0)) < size / 4:
            return value
    return None


def _corners(barcode, inverse: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    p = barcode.position
    pts = np.array([(p.top_left.x, p.top_left.y), (p.top_right.x, p.top_right.y),
                    (p.bottom_right.x, p.bottom_right.y), (p.bottom_left.x, p.bottom_left.y)],
                   np.float32)
    if inverse is not None:
        return cv2.perspectiveTransform(pts.reshape(-1, 1, 2), inverse).reshape(4, 2)
    return pts / scale


def _rounded(pts: np.ndarray) -> Corners:
    return tuple((round(float(x), 1), round(float(y), 1)) for x, y in pts)  # type: ignore[return-value]


def _code(barcode, pts: np.ndarray, strategy: str) -> Code:
    return Code(barcode.text, bytes(barcode.bytes), _rounded(pts), strategy)


def _raw_code(raw: bytes, pts: np.ndarray, strategy: str) -> Code:
    """A code our own second stage read (bytes, not a zxing-cpp barcode)."""
    return Code(text_of(raw), raw, _rounded(pts), strategy)


def _read(image: np.ndarray, binarizer=zxingcpp.Binarizer.LocalAverage, invert: bool = True,
          downscale: bool = True) -> tuple[list, list]:
    """(valid barcodes, barcodes located but not decodable).

    `try_rotate` is off: it only concerns 1-D barcodes, and costs a QR read ~7% for nothing.
    """
    # The whole QR group, Micro QR and rMQR included, although BHYT and CCCD codes are model 2:
    # a model 2 code half hidden by a highlight is often located only as a "Micro QR" candidate,
    # and rectifying that candidate reads it (model 2 alone: bright spots 17 -> 13 of 49 codes).
    # Only model 2 reads are texts (READ_FORMATS); the others are located candidates.
    out = zxingcpp.read_barcodes(image, formats=QR, binarizer=binarizer, return_errors=True,
                                 try_rotate=False, try_invert=invert, try_downscale=downscale,
                                 text_mode=TEXT)
    read = [b for b in out if b.valid and b.format in READ_FORMATS]
    return read, [b for b in out if not (b.valid and b.format in READ_FORMATS)]


def as_gray(frame: np.ndarray) -> np.ndarray:
    """Accept grayscale or BGR; always return a contiguous uint8 2-D array."""
    if frame.ndim == 3 and frame.shape[2] == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(frame, dtype=np.uint8)


def baseline(frame: np.ndarray) -> list[Code]:
    """Plain zxing-cpp, QR only: the reference every benchmark ratio is taken against."""
    gray = as_gray(frame)
    return [_code(b, _corners(b), "baseline") for b in zxingcpp.read_barcodes(gray, formats=QR, text_mode=TEXT)]


#: Located codes smaller than this (pixels) are cropped and enlarged before any warping.
SMALL_CODE = 140
#: Sizes a located-but-unread code is warped to (in bench/decode.py two sizes read as many
#: codes as three, and the time saved goes to strategies).
RECTIFY_SIZES = (160, 280)


def _read_view(image: np.ndarray, to_frame, name: str) -> list[Code]:
    """Read a view made for one candidate, as is and with local contrast restored, with each
    binarizer; `to_frame(barcode)` maps its corners back to the frame."""
    for view in (image, clahe(image, 2.0, 4)):
        for binarizer in (zxingcpp.Binarizer.LocalAverage, zxingcpp.Binarizer.GlobalHistogram):
            found, _ = _read(view, binarizer, downscale=False)
            if found:
                return [_code(b, to_frame(b), name) for b in found]
    return []


def _enlarge(gray: np.ndarray, pts: np.ndarray) -> list[Code]:
    """Crop around a small located code and enlarge it, so zxing-cpp detects it afresh with
    modules several pixels wide (its own corner estimate may be what failed)."""
    side = _size(pts)
    margin = side * 0.6
    x0, y0 = np.maximum(pts.min(0) - margin, 0).astype(int)
    x1, y1 = (pts.max(0) + margin).astype(int)
    scale = 200 / side
    image = cv2.resize(gray[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    offset = np.array([x0, y0], np.float32)
    return _read_view(image, lambda b: _corners(b, scale=scale) + offset, "enlarge")


def _rectify(gray: np.ndarray, pts: np.ndarray) -> list[Code]:
    """Warp a located-but-unread code to a square at a few sizes and read it again.

    zxing-cpp's corner estimate is usually right even when sampling failed on tilt, curvature
    or a glare spot; a clean square grid with local contrast restored often reads.
    """
    if _size(pts) < SMALL_CODE and (codes := _enlarge(gray, pts)):
        return codes
    for size in RECTIFY_SIZES:
        m = size // 6
        dst = np.array([[m, m], [m + size, m], [m + size, m + size], [m, m + size]], np.float32)
        h = cv2.getPerspectiveTransform(pts.astype(np.float32), dst)
        warped = cv2.warpPerspective(gray, h, (size + 2 * m, size + 2 * m), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        inverse = np.linalg.inv(h)
        if codes := _read_view(warped, lambda b: _corners(b, inverse), "rectify"):
            return codes
    return []


def _version(extra) -> int | None:
    """The QR version zxing-cpp found for a failed read (None: Micro QR, rMQR, or not read)."""
    v = (extra or {}).get("Version") if isinstance(extra, dict) else None
    return int(v) if isinstance(v, str) and v.isdigit() and 1 <= int(v) <= 40 else None


def _modules(barcode) -> int | None:
    """Modules a side of a located symbol (the mean of its two sides, as guidance measures its
    side in pixels), from what zxing-cpp read of its version: QR `7`, Micro QR `M3` (often a
    model 2 code's finder seen alone), rMQR `R13x77`."""
    extra = barcode.extra if isinstance(barcode.extra, dict) else {}
    v = extra.get("Version")
    if not isinstance(v, str):
        return None
    if v.isdigit() and 1 <= int(v) <= 40:
        return 17 + 4 * int(v)
    if len(v) == 2 and v[0] == "M" and v[1] in "1234":
        return 9 + 2 * int(v[1])
    if v.startswith("R") and "x" in v:
        h, _, w = v[1:].partition("x")
        if h.isdigit() and w.isdigit():
            return (int(h) + int(w)) // 2
    return None


def text_of(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _sample_grid(gray: np.ndarray, pts: np.ndarray, extra: dict | None) -> grid.Grid | None:
    version = _version(extra)
    return None if version is None else grid.sample(gray, pts, version)


def _grid_code(g: grid.Grid, extra: dict | None, pts: np.ndarray, name: str = "bitlevel") -> list[Code]:
    """Decode a sampled (or fused) grid with zxing-cpp's format read, else the grid's own."""
    extra = extra or {}
    ecl, mask = extra.get("ECLevel"), extra.get("DataMask")
    known = isinstance(ecl, str) and ecl in ("L", "M", "Q", "H") and isinstance(mask, int) and 0 <= mask <= 7
    raw = grid.decode_grid(g, ecl, mask) if known else None
    if raw is None:   # zxing-cpp's format read may be what failed: read it from the grid
        raw = grid.decode_grid(g)
    return [] if raw is None else [_raw_code(raw, pts, name)]


def _distinct(pts_list: list[np.ndarray], limit: int) -> list[np.ndarray]:
    kept: list[np.ndarray] = []
    for pts in pts_list:
        size = _size(pts)
        if size < 8:
            continue
        if all(np.linalg.norm(pts.mean(0) - k.mean(0)) > size / 2 for k in kept):
            kept.append(pts)
        if len(kept) == limit:
            break
    return kept


def _size(pts: np.ndarray) -> float:
    return max(float(np.ptp(pts[:, 0])), float(np.ptp(pts[:, 1])), 1.0)


class CostModel:
    """What reading costs on this machine, learnt as frames go by: each strategy's running cost in
    multiples of the plain read (so the cascade never starts one that would overrun the budget:
    the tail latency is what a patient feels), and a plain read's typical seconds per pixel.
    Each reader owns one; `decode()` without one uses a shared default."""

    def __init__(self) -> None:
        self.cost_x: dict[str, float] = {}
        self.plain_s_per_px: float | None = None

    def typical_base(self, plain_s: float, pixels: int) -> float:
        """The plain-read time budgets are counted in: this frame's own, capped at SLOW_FRAME_X
        times the recent typical time for its size."""
        typical = self.plain_s_per_px
        per_px = plain_s / pixels
        self.plain_s_per_px = per_px if typical is None else 0.95 * typical + 0.05 * min(per_px, 3 * typical)
        return plain_s if typical is None else min(plain_s, SLOW_FRAME_X * typical * pixels)

    def expected(self, name: str) -> float:
        return self.cost_x.get(name, 1.0)

    def observe(self, name: str, cost: float) -> None:
        self.cost_x[name] = 0.9 * self.cost_x.get(name, cost) + 0.1 * cost


_default_costs = CostModel()


class Cascade:
    """One frame through: plain read, rectified candidates, then strategies until every code
    zxing-cpp located is read, or the budget is spent."""

    def __init__(self, gray: np.ndarray, result: DecodeResult, costs: CostModel | None = None,
                 second_stage: bool = True):
        self.gray, self.result = gray, result
        self.costs = costs or _default_costs
        self.second_stage = second_stage
        #: grids sampled by the second stage in this frame: (corners, grid, zxing-cpp's extra)
        self.grids: list[tuple[np.ndarray, grid.Grid, dict]] = []
        self.t0 = time.perf_counter()
        found, errors = _read(gray)
        self.base_s = self.costs.typical_base(max(time.perf_counter() - self.t0, 1e-5), gray.size)
        result.strategies_run.append("plain")
        self.add([_code(b, _corners(b), "plain") for b in found])
        self.candidates = _distinct([_corners(b) for b in errors], MAX_CANDIDATES)
        result.candidates = len(self.candidates)
        self.tried: list[np.ndarray] = []
        #: what zxing-cpp read of each located code (version, EC level, mask), for the second stage
        self.located: list[tuple[np.ndarray, dict]] = [(_corners(b), b.extra) for b in errors
                                                      if _version(b.extra)]
        #: modules a side of every located symbol whose version zxing-cpp read (for guidance)
        self.sizes: list[tuple[np.ndarray, int]] = [(_corners(b), m) for b in errors if (m := _modules(b))]

    def extra_for(self, pts: np.ndarray) -> dict | None:
        return _at(pts, self.located)

    def elapsed_x(self) -> float:
        return (time.perf_counter() - self.t0) / self.base_s

    def add(self, codes: list[Code]) -> None:
        """Keep codes not already read at the same place (another strategy reading it again)."""
        for code in codes:
            c = np.array(code.corners, np.float32)
            if all(np.linalg.norm(c.mean(0) - np.array(k.corners, np.float32).mean(0)) > _size(c) / 2
                   for k in self.result.codes):
                self.result.codes.append(code)

    def unread(self) -> list[np.ndarray]:
        """Located candidates that no read code covers yet."""
        centres = [np.array(k.corners, np.float32).mean(0) for k in self.result.codes]
        return [p for p in self.candidates
                if all(np.linalg.norm(p.mean(0) - c) > _size(p) / 2 for c in centres)]

    def done(self) -> bool:
        return bool(self.result.codes) and not self.unread()

    def modules_for(self, pts: np.ndarray) -> int | None:
        return _at(pts, self.sizes)

    def explain(self) -> None:
        """Nothing read but something located: say why (what the patient should change)."""
        if self.result.codes or not self.candidates:
            return
        self.result.located = [(_rounded(p), self.modules_for(p)) for p in self.candidates]
        self.result.guidance = guidance.assess(self.gray, self.result.located)

    def rectify_candidates(self, budget_x: float = float("inf")) -> None:
        for pts in self.unread():
            if self.elapsed_x() >= budget_x:
                return
            if any(np.linalg.norm(pts.mean(0) - t.mean(0)) < 4 for t in self.tried):
                continue
            self.tried.append(pts)
            codes = self.bitlevel(pts) if self.second_stage else []
            self.add(codes or _rectify(self.gray, pts))

    def bitlevel(self, pts: np.ndarray) -> list[Code]:
        extra = self.extra_for(pts)
        sampled = _sample_grid(self.gray, pts, extra)
        if sampled is None:
            return []
        self.grids.append((pts, sampled, extra))
        return _grid_code(sampled, extra, pts)

    def fits(self, name: str, budget_x: float) -> bool:
        return self.elapsed_x() + self.costs.expected(name) <= budget_x

    def run(self, strategy: Strategy, budget_x: float = float("inf")) -> None:
        t0 = time.perf_counter()
        image, scale = strategy.prepare(self.gray)
        found, errors = _read(image, strategy.binarizer, strategy.invert, strategy.downscale)
        cost = (time.perf_counter() - t0) / self.base_s
        self.costs.observe(strategy.name, cost)
        self.result.strategies_run.append(strategy.name)
        self.add([_code(b, _corners(b, scale=scale), strategy.name) for b in found])
        if errors:
            self.located += [(_corners(b, scale=scale), b.extra) for b in errors if _version(b.extra)]
            self.sizes += [(_corners(b, scale=scale), m) for b in errors if (m := _modules(b))]
            # this view located codes: try the ones not tried yet, rectified
            fresh = [p for p in _distinct([_corners(b, scale=scale) for b in errors], MAX_CANDIDATES)
                     if all(np.linalg.norm(p.mean(0) - t.mean(0)) >= 4 for t in self.tried + self.candidates)]
            self.candidates = (self.candidates + fresh)[:MAX_CANDIDATES * 2]
            self.result.candidates = max(self.result.candidates, len(self.candidates))
            self.rectify_candidates(budget_x)


def decode(frame: np.ndarray, budget_x: float = DEFAULT_BUDGET_X, budget_ms: float | None = None,
           order: tuple[str, ...] = DEFAULT_ORDER, gate: bool = True, costs: CostModel | None = None,
           second_stage: bool = True) -> DecodeResult:
    """Read the QR codes in one frame (grayscale or BGR uint8), stopping at the first valid read.

    `budget_x` caps the work at that multiple of this frame's plain zxing-cpp time (a strategy
    expected to overrun it is skipped); `budget_ms` additionally stops the cascade after that
    many milliseconds. With `gate`, a frame in which neither the plain read nor a cheap second
    glance at half size located anything code-like stops there: the counter is empty most of
    the day, and such frames must cost little more than plain zxing-cpp.
    """
    result = DecodeResult()
    t0 = time.perf_counter()
    gray = as_gray(frame)
    if gray.ndim != 2 or min(gray.shape) < 21:  # nothing a QR code fits in
        return result
    cascade = Cascade(gray, result, costs, second_stage)
    if gate and not result.codes and not cascade.candidates:
        cascade.run(STRATEGIES[GLANCE], budget_x)
    if not cascade.done() and (cascade.candidates or not gate):
        cascade.rectify_candidates(budget_x)
        for name in order:
            # once a code is read, further located codes get a smaller share of the budget
            limit = budget_x if not result.codes else budget_x * MORE_CODES_SHARE
            if cascade.done() or cascade.elapsed_x() >= limit:
                break
            if budget_ms is not None and (time.perf_counter() - t0) * 1000 >= budget_ms:
                break
            if cascade.fits(name, limit):
                cascade.run(STRATEGIES[name], limit)
    cascade.explain()
    result.ms = (time.perf_counter() - t0) * 1000
    return result


def decode_with(frame: np.ndarray, strategy: str) -> DecodeResult:
    """One named strategy alone (`baseline` = plain zxing-cpp), for comparison and tuning."""
    t0 = time.perf_counter()
    gray = as_gray(frame)
    if strategy == "baseline":
        codes = baseline(gray)
    else:
        s = STRATEGIES[strategy]
        image, scale = s.prepare(gray)
        found, _ = _read(image, s.binarizer, s.invert, s.downscale)
        codes = [_code(b, _corners(b, scale=scale), s.name) for b in found]
    return DecodeResult(codes, 0, [strategy], (time.perf_counter() - t0) * 1000)


@dataclass
class _Track:
    """One code located but not read, followed over the frames of a presentation."""
    centre: np.ndarray
    size: float
    extra: dict
    fused: grid.FusedGrid
    last: int


class FrameReader:
    """Decoder state for a camera stream: each frame gets the plain read, the second stage and
    the rectified candidates, and the next `per_frame` strategies of the rotation.

    A phone is held up for dozens of frames, so over a presentation the stream sees the whole
    cascade while no single frame costs much more than plain zxing-cpp. With `fuse`, a code that
    is located but not read is followed from frame to frame and its module soft values are
    accumulated (agent.decode.grid.FusedGrid): a module hidden by a reflection in one frame is
    read in another as the reflection moves. The rotation and the tracks restart after a read.
    """

    #: frames a track survives without being seen again
    TRACK_FRAMES = 20
    #: while a changing scene gives no read, infer hidden finder patterns every this many frames
    #: (agent.decode.finders: about 5x a plain read, so not on every frame)
    FINDER_EVERY = 4

    def __init__(self, order: tuple[str, ...] = STREAM_ORDER, per_frame: int = 1, rectify: bool = True,
                 second_stage: bool = True, fuse: bool = True, infer_finders: bool = True):
        self.order, self.per_frame, self.rectify = order, per_frame, rectify
        self.second_stage, self.fuse = second_stage, fuse and second_stage
        self.infer_finders = infer_finders and second_stage
        self._unread = 0
        self.costs = CostModel()
        self.tracks: list[_Track] = []
        self._next = 0
        self._frame = 0

    def read(self, frame: np.ndarray, active: bool = True, view: View | None = None) -> DecodeResult:
        """Decode one frame. `active=False` (a still, empty scene) skips the rotation unless
        zxing-cpp located something code-like. `view` (agent.capture.view.View): the crop the
        frame was taken with, so a code is followed across frames of different crops."""
        result = DecodeResult()
        t0 = time.perf_counter()
        gray = as_gray(frame)
        if gray.ndim != 2 or min(gray.shape) < 21:
            return result
        self._frame += 1
        short = view is not None and view.short     # a bracket's short frame (the capture loop's)
        cascade = Cascade(gray, result, self.costs, self.second_stage)
        if not result.codes and self.rectify:
            cascade.rectify_candidates()
        if not result.codes and self.infer_finders and active and self._unread % self.FINDER_EVERY == 1:
            self._infer(cascade)
        if not result.codes and self.fuse:
            self._fuse(cascade, view)
        if not result.codes and self.order and (active or cascade.candidates):
            for i in range(self.per_frame):
                if self.second_stage and short and i == 0:     # a bracket's short frame
                    cascade.run(STRATEGIES[GLARE_STRATEGY])
                else:
                    cascade.run(STRATEGIES[self.order[self._next % len(self.order)]])
                    self._next += 1
                if result.codes:
                    break
        cascade.explain()
        self._unread = 0 if result.codes else self._unread + 1
        result.unread = cascade.unread() + [pts for pts, _, _ in cascade.grids if not result.codes]
        if result.codes:
            self.reset()
        self.tracks = [t for t in self.tracks if self._frame - t.last <= self.TRACK_FRAMES]
        result.ms = (time.perf_counter() - t0) * 1000
        return result

    def reset(self) -> None:
        """A new presentation: the strategy rotation from the start, no code followed any more."""
        self._next = 0
        self.tracks.clear()

    def _infer(self, cascade: "Cascade") -> None:
        """A code whose third finder is hidden: inferred from the two visible ones; its grid joins
        the tracks, so fusion can finish what one frame could not."""
        for pts, sampled, raw in finders.infer(cascade.gray):
            if raw is not None:
                cascade.add([_raw_code(raw, pts, "finders")])
                return
            cascade.grids.append((pts, sampled, {}))

    def _fuse(self, cascade: "Cascade", view: View | None = None) -> None:
        for pts, sampled, extra in cascade.grids:
            common = view.to_array(pts) if view is not None else pts   # where the sensor saw it
            centre, size = common.mean(0), _size(common)
            track = next((t for t in self.tracks if t.fused.version == sampled.version
                          and np.linalg.norm(t.centre - centre) < max(size, t.size) / 2), None)
            if track is None:
                track = _Track(centre, size, extra, grid.FusedGrid(sampled.version), self._frame)
                self.tracks.append(track)
            track.centre, track.size, track.last = centre, size, self._frame
            track.fused.add(sampled)
            if track.fused.frames >= 2:
                cascade.add(_grid_code(track.fused.grid(), track.extra, pts, "fused"))
