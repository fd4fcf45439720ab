"""The physics of a virtual Raspberry Pi Camera Module 3 looking at a counter where patients hold up
phones: what `agent/sim/vcam/picamera2` (the fake picamera2 package) renders.

Everything is computed in linear light, in the sensor's pixel-array coordinates, and only then cut
to the requested `ScalerCrop`, scaled to the stream size, exposed, clipped and tone-mapped: the
controller sees the same trade-offs as on the real sensor (more pixels per module in a crop and in
the full-resolution mode, saturation under a lamp's reflection, noise at short exposure, motion
blur at long exposure). Where each figure comes from:

- Sensor (Sony IMX708 on Camera Module 3, Raspberry Pi's product brief): 4608x2592 pixel array of
  1.4 um pixels, f/1.8 lens of 4.74 mm focal length, 66 degrees horizontal field of view. Sensor
  modes as picamera2 lists them for the imx708: 2304x1296 (2x2 binned) up to 56 fps, 4608x2592 up
  to 14 fps. Analogue gain 1.0-16.0 (libcamera's imx708 camera helper).
- Full well and read noise: not published for the IMX708; 4500 e- and 2.5 e- are typical of 1.4 um
  BSI pixels. Photo-electrons per nit-second from photometry: sensor illuminance
  E = pi L / (4 N^2) at N = 1.8, about 4100 photons per lux-s per um^2 at 555 nm, QE 0.5 on a
  1.96 um^2 pixel: about 970 e- per (cd/m^2 x s).
- Phone screens: about 500 cd/m^2 white at full brightness in manual mode; the slider maps roughly
  quadratically to luminance (2 + 500 b^2 cd/m^2: 7 at 10%, 82 at 40%).
- The counter: 300-500 lux of office lighting on surfaces of 20-50% reflectance, L = E rho / pi:
  about 20-80 cd/m^2.
- Lamp reflections on the phone glass: 3-20x the screen's white (the issue's range; a ceiling
  tube seen in glass is several thousand cd/m^2, dimmed by the glass's 4% reflectance).
- The code: a BHYT/CCCD QR (version 10-14) drawn 4-5 cm a side, held 14-26 cm away (medium) or
  14-35 cm (hard), off centre; hand tremor of about 0.3 mm and 10-20 mm/s (physiological tremor,
  4-12 Hz) on a slow drift of a few mm, a slow tilt after about 1.5 s.
- Lens blur: Gaussian of 0.8 array pixels (an f/1.8 lens' diffraction spot is about 2.4 um, 1.7
  pixels wide) plus the autofocus' residual defocus; the pixel's own aperture (twice as wide when
  binned).
- ISP: black level removed, linear values clipped at full scale, then a 1/2.2 tone curve to the Y
  plane the product reads (the Pi's default contrast curve is close to it).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import cv2
import numpy as np

from agent.sim.screen import qr_modules

ARRAY = (4608, 2592)                   # IMX708 pixel array
HFOV_DEG = 66.0
FOCAL_PX = (ARRAY[0] / 2) / math.tan(math.radians(HFOV_DEG / 2))   # about 3548 array pixels
FULL_WELL_E = 4500.0
READ_NOISE_E = 2.5
E_PER_NIT_S = 970.0                    # photo-electrons per (cd/m^2 x second), one 1.4 um pixel
MAX_GAIN = 16.0
LENS_SIGMA = 0.8                       # array pixels
GAMMA = 2.2


@dataclass(frozen=True)
class Mode:
    size: tuple[int, int]
    bin: int
    max_fps: float

    @property
    def min_frame_us(self) -> int:
        return int(1e6 / self.max_fps)


MODES = (Mode((2304, 1296), 2, 56.03), Mode((4608, 2592), 1, 14.35))


@dataclass(frozen=True)
class Level:
    distance_m: tuple[float, float]
    side_m: tuple[float, float]
    brightness: tuple[float, float]
    dark_mode: float
    tilt_deg: float
    rotate_deg: float
    defocus: tuple[float, float]        # autofocus residual, array pixels
    glare: tuple[int, int]              # reflections on the glass
    glare_x: tuple[float, float]        # peak over the screen's white


LEVELS = {
    "medium": Level((0.14, 0.26), (0.04, 0.05), (0.4, 1.0), 0.15, 20, 30, (0.3, 1.2), (0, 1), (3, 20)),
    "hard": Level((0.14, 0.35), (0.04, 0.05), (0.1, 1.0), 0.25, 35, 180, (0.5, 2.0), (1, 2), (3, 20)),
}

ENTER_S = 0.25            # the phone slides into view this long
TILT_AFTER_S = 1.5
BEZEL_NITS = 3.0          # the phone's black glass and frame under room light
AMBIENT_GLASS_NITS = 2.0  # the room (about 50 cd/m^2) in the screen glass's 4% reflection
SUPERSAMPLE = 4           # content samples per screen pixel (module edges stay sharp when zoomed)
GLARE_STEP = 16           # content samples per glare-map sample


def screen_nits(brightness: float) -> float:
    return 2.0 + 500.0 * brightness ** 2


@dataclass
class Phone:
    """One presentation: a phone showing `text` from `start` for `duration` seconds."""
    text: str
    start: float
    duration: float
    level: str = "medium"
    seed: int = 0
    # drawn from the seed
    content: np.ndarray = field(init=False, repr=False)     # relative luminance, white = 1
    mm_per_px: float = field(init=False)
    qr_centre: np.ndarray = field(init=False)              # content pixels
    white_nits: float = field(init=False)
    dark: bool = field(init=False)

    def __post_init__(self) -> None:
        p = LEVELS[self.level]
        rng = random.Random(f"vcam:{self.level}:{self.seed}")
        self.dark = rng.random() < p.dark_mode
        self.content, corners = _screen_content(self.text, self.dark)
        side_px = corners[1, 0] - corners[0, 0]
        self.side_m = rng.uniform(*p.side_m)
        self.mm_per_px = self.side_m * 1000 / side_px
        self.qr_centre = corners.mean(0)
        self.qr_corners = corners
        self.white_nits = screen_nits(rng.uniform(*p.brightness))
        self.distance = rng.uniform(*p.distance_m)
        # off centre: the code's centre anywhere the whole code still fits in the field
        half = FOCAL_PX * self.side_m / self.distance * 0.75
        self.centre_px = np.array([rng.uniform(half + 40, ARRAY[0] - half - 40),
                                   rng.uniform(half + 40, ARRAY[1] - half - 40)])
        self.tilt = [math.radians(rng.uniform(-p.tilt_deg, p.tilt_deg)) for _ in range(2)]
        self.angle = math.radians(rng.uniform(-p.rotate_deg, p.rotate_deg))
        self.tilt_rate = math.radians(rng.uniform(4, 10)) * rng.choice((-1, 1))
        self.defocus = rng.uniform(*p.defocus)
        # tremor: sums of sines, deterministic in time (so any frame rate sees the same hand)
        self.tremor = [(rng.uniform(4, 12), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi),
                        rng.uniform(0.1, 0.25)) for _ in range(3)]          # Hz, phase x, phase y, mm
        self.drift = [(rng.uniform(0.2, 0.8), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi),
                       rng.uniform(1.0, 3.0)) for _ in range(2)]
        self.glare = []
        for _ in range(rng.randint(*p.glare)):
            # a lamp's reflection on the glass, near the code (mm from the code's centre on the screen)
            self.glare.append((rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(4, 9), rng.uniform(3, 7),
                               rng.uniform(*p.glare_x)))
        self.glare_slide = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1)])
        self.glare_slide *= rng.uniform(2.0, 4.0) / max(np.linalg.norm(self.glare_slide), 1e-6)  # mm per degree
        # luminance in cd/m^2: the panel, the bezel, and room light reflected by the glass (4% of
        # a 50 cd/m^2 room)
        nits = self.content * self.white_nits + BEZEL_NITS * (self.content < 0) + AMBIENT_GLASS_NITS
        nits[self.content < 0] = BEZEL_NITS
        self._pyramid: list[np.ndarray] = [nits.astype(np.float32)]

    def pyramid(self, level: int) -> np.ndarray:
        while len(self._pyramid) <= level:
            self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))
        return self._pyramid[level]

    def glare_map(self, tilting: float) -> np.ndarray:
        """The reflections' luminance over the content at 1/GLARE_STEP resolution (they are smooth)."""
        h, w = self.content.shape
        yy, xx = np.mgrid[0:h:GLARE_STEP, 0:w:GLARE_STEP].astype(np.float32)
        out = np.zeros(xx.shape, np.float32)
        for u, v, sx, sy, strength in self.glare_spots(tilting):
            out += strength * self.white_nits * np.exp(-(((xx - u) / sx) ** 2 + ((yy - v) / sy) ** 2))
        return out

    def visible(self, t: float) -> bool:
        return self.start <= t < self.start + self.duration

    def offset_mm(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity) of the hand relative to the rest pose, in mm and mm/s."""
        s = t - self.start
        pos, vel = np.zeros(2), np.zeros(2)
        for f, px, py, a in self.tremor + self.drift:
            w = 2 * math.pi * f
            pos += a * np.array([math.sin(w * s + px), math.sin(w * s + py)])
            vel += a * w * np.array([math.cos(w * s + px), math.cos(w * s + py)])
        if s < ENTER_S:   # sliding in from below, 80 mm in ENTER_S, decelerating
            k = 1 - s / ENTER_S
            pos[1] += 80 * k * k
            vel[1] += -2 * 80 * k / ENTER_S
        return pos, vel

    def pose(self, t: float) -> tuple[np.ndarray, float, np.ndarray]:
        """(3x3 homography content px -> array px, seconds into the tilt, image velocity array px/s)."""
        s = t - self.start
        pos, vel = self.offset_mm(t)
        tilting = max(0.0, s - TILT_AFTER_S)
        tx = self.tilt[0] + self.tilt_rate * tilting
        ty = self.tilt[1]
        z = self.distance
        # the code's centre in metres, camera frame
        cx = (self.centre_px[0] - ARRAY[0] / 2) * z / FOCAL_PX + pos[0] / 1000
        cy = (self.centre_px[1] - ARRAY[1] / 2) * z / FOCAL_PX + pos[1] / 1000
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        rot_z = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
        rot_x = np.array([[1, 0, 0], [0, math.cos(tx), -math.sin(tx)], [0, math.sin(tx), math.cos(tx)]])
        rot_y = np.array([[math.cos(ty), 0, math.sin(ty)], [0, 1, 0], [-math.sin(ty), 0, math.cos(ty)]])
        r = rot_y @ rot_x @ rot_z
        m = self.mm_per_px / 1000
        # content (u, v, 1) -> world: centre + R [(u - u0) m, (v - v0) m, 0]
        a = np.column_stack([r[:, 0] * m, r[:, 1] * m,
                             np.array([cx, cy, z]) - r[:, 0] * m * self.qr_centre[0] - r[:, 1] * m * self.qr_centre[1]])
        k = np.array([[FOCAL_PX, 0, ARRAY[0] / 2], [0, FOCAL_PX, ARRAY[1] / 2], [0, 0, 1]])
        velocity = vel / 1000 * FOCAL_PX / z
        return k @ a, tilting, velocity

    def glare_spots(self, tilting: float) -> list[tuple[float, float, float, float, float]]:
        """(u, v, sx, sy, strength) in content pixels: the reflections slide as the phone tilts."""
        out = []
        shift = self.glare_slide * math.degrees(abs(self.tilt_rate) * tilting)
        for dx, dy, sx, sy, strength in self.glare:
            u = self.qr_centre[0] + (dx + shift[0]) / self.mm_per_px
            v = self.qr_centre[1] + (dy + shift[1]) / self.mm_per_px
            out.append((u, v, sx / self.mm_per_px, sy / self.mm_per_px, strength))
        return out

    def code_box(self, t: float) -> np.ndarray:
        """The code's four corners in array pixels at time t (ground truth, for tests and benches)."""
        h, _, _ = self.pose(t)
        return cv2.perspectiveTransform(self.qr_corners.reshape(-1, 1, 2).astype(np.float64), h).reshape(4, 2)


def _screen_content(text: str, dark: bool) -> tuple[np.ndarray, np.ndarray]:
    """The phone screen as relative luminance (white = 1) at one sample per screen pixel, with a
    black bezel; the QR's corners in it. (The RGB sub-pixel stripes of agent/sim/screen.py are
    below what this camera resolves at 14-35 cm: a 400 ppi pixel is 0.06 mm, 1 array pixel at
    14 cm is 0.04 mm, so they are averaged here.)"""
    w, h, bezel = 360, 760, 24
    img = np.full((h, w), 0.03 if dark else 0.92, np.float32)
    img[:70] = 0.3                                  # the app's header
    rng = random.Random(text)
    for i in range(5):
        y = 110 + i * 28
        img[y:y + 12, 24:24 + rng.randint(120, 300)] = 0.45
    modules = qr_modules(text).astype(np.float32) / 255.0
    n = modules.shape[0]
    px = max(3, 300 // (n + 8))
    side = n * px
    x0, y0 = (w - side) // 2, 300
    qr = cv2.resize(modules, (side, side), interpolation=cv2.INTER_NEAREST)
    if dark:
        qr = 1 - qr
    pad = 4 * px
    img[y0 - pad:y0 + side + pad, x0 - pad:x0 + side + pad] = 0.0 if dark else 1.0
    img[y0:y0 + side, x0:x0 + side] = np.where(qr > 0.5, 1.0, 0.02)   # panel black is not 0
    out = np.full((h + 2 * bezel, w + 2 * bezel), -1.0, np.float32)      # -1: the bezel
    out[bezel:-bezel, bezel:-bezel] = img
    out = cv2.resize(out, None, fx=SUPERSAMPLE, fy=SUPERSAMPLE, interpolation=cv2.INTER_NEAREST)
    corners = (np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], np.float32)
               + bezel) * SUPERSAMPLE
    return out, corners


class Counter:
    """The empty counter: a texture of 20-80 cd/m^2 (office light on wood and paper)."""

    def __init__(self, seed: int = 0):
        nrng = np.random.default_rng(seed)
        w, h = ARRAY[0] // 8, ARRAY[1] // 8
        low = cv2.resize(nrng.random((9, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        grain = cv2.GaussianBlur(nrng.random((h, w)).astype(np.float32), (0, 0), 2)
        self.nits = np.clip(20 + 45 * low + 20 * grain, 15, 90).astype(np.float32)

    def view(self, to_out: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        scale = np.diag([8.0, 8.0, 1.0])
        return cv2.warpPerspective(self.nits, to_out @ scale, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)


@dataclass
class Exposure:
    exposure_us: float
    gain: float


class Optics:
    """Render one frame: the scene at time t through a mode, a crop, an output size and an exposure."""

    def __init__(self, counter: Counter, seed: int = 0):
        self.counter = counter
        self.nrng = np.random.default_rng(seed)

    def radiance(self, phones: list[Phone], t: float, mode: Mode, crop: tuple[int, int, int, int],
                 size: tuple[int, int], exposure_s: float) -> np.ndarray:
        """Linear scene luminance (cd/m^2) as the stream's pixels see it, blurred by lens, pixel
        aperture, defocus and motion."""
        x, y, cw, ch = crop
        w, h = size
        r = cw / w                                   # array pixels per output pixel
        to_out = np.array([[1 / r, 0, -x / r], [0, ch and h / ch, -y * h / ch], [0, 0, 1]])
        img = self.counter.view(to_out, size)
        sigma = LENS_SIGMA
        motion = np.zeros(2)
        for ph in phones:
            if not ph.visible(t):
                continue
            hom, tilting, velocity = ph.pose(t)
            full = to_out @ hom
            # content pixels per output pixel: pick a pre-smoothed level so warping does not alias
            out_per_content = math.sqrt(abs(np.linalg.det(full[:2, :2] / full[2, 2]))) if full[2, 2] else 1
            level = max(0, int(math.floor(math.log2(max(1.0, 1 / max(out_per_content, 1e-6))))))
            src = ph.pyramid(level)
            down = np.diag([2.0 ** level, 2.0 ** level, 1.0])
            mask = cv2.warpPerspective(np.ones_like(src), full @ down, size, flags=cv2.INTER_LINEAR)
            screen = cv2.warpPerspective(src, full @ down, size, flags=cv2.INTER_LINEAR)
            if ph.glare:    # the reflections of lamps on the glass
                step = np.diag([float(GLARE_STEP), float(GLARE_STEP), 1.0])
                screen += cv2.warpPerspective(ph.glare_map(tilting), full @ step, size, flags=cv2.INTER_LINEAR)
            img = img * (1 - mask) + screen
            sigma = math.hypot(LENS_SIGMA, ph.defocus)
            motion = velocity * exposure_s            # array pixels smeared during the exposure
        # lens + pixel aperture (binned pixels are twice as wide), in output pixels
        sigma_out = math.hypot(sigma, 0.5 * mode.bin) / r
        img = cv2.GaussianBlur(img, (0, 0), max(sigma_out, 0.3))
        length = float(np.linalg.norm(motion)) / r
        if length > 1.0:
            n = int(math.ceil(length)) | 1
            kernel = np.zeros((n, n), np.float32)
            kernel[n // 2, :] = 1.0
            rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2),
                                          -math.degrees(math.atan2(motion[1], motion[0])), 1)
            kernel = cv2.warpAffine(kernel, rot, (n, n))
            img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
        return img

    def expose(self, nits: np.ndarray, mode: Mode, crop_w: int, exp: Exposure) -> np.ndarray:
        """Linear value (full scale = 1) with shot and read noise: electrons per native (possibly
        binned) pixel, then the stream's scaling averages or repeats them."""
        binned = mode.bin * mode.bin                     # a binned pixel sums 4 photosites
        electrons = nits * np.float32((exp.exposure_us / 1e6) * E_PER_NIT_S * binned)
        native_per_out = (crop_w / mode.bin) / nits.shape[1]    # native pixels per output pixel
        noise = self._noise(nits.shape)
        if native_per_out < 1:       # upscaled: neighbouring output pixels share a native pixel's noise
            s = 0.5 / native_per_out
            noise = cv2.GaussianBlur(noise, (0, 0), s) * np.float32(2 * math.sqrt(math.pi) * s)
            noise_scale = 1.0
        else:
            noise_scale = 1 / native_per_out             # averaged over native_per_out^2 pixels
        sd = cv2.sqrt(electrons + np.float32(READ_NOISE_E ** 2 * binned))
        e = electrons + sd * noise * np.float32(noise_scale)
        return np.clip(e * np.float32(exp.gain / (FULL_WELL_E * binned)), 0, 1)

    def _noise(self, shape: tuple[int, int]) -> np.ndarray:
        """Standard normal noise: a window at a random offset into a larger precomputed field
        (drawing a fresh 1280x720 field costs more than the rest of the frame)."""
        h, w = shape
        bank = getattr(self, "_bank", None)
        if bank is None or bank.shape[0] < h + 64 or bank.shape[1] < w + 64:
            bank = self._bank = self.nrng.standard_normal((h + 256, w + 256), dtype=np.float32)
        y, x = int(self.nrng.integers(0, bank.shape[0] - h)), int(self.nrng.integers(0, bank.shape[1] - w))
        return bank[y:y + h, x:x + w]


_TONE = (np.power(np.linspace(0, 1, 4096), 1 / 2.2) * 255 + 0.5).astype(np.uint8)


def tone(linear: np.ndarray) -> np.ndarray:
    """The ISP's Y plane: a 1/2.2 tone curve on the clipped linear value."""
    return _TONE[(linear * 4095).astype(np.uint16)]


def linear_of(y: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(y, np.float32) / 255.0) ** GAMMA
