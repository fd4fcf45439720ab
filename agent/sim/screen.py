"""Render a card QR on a phone screen and image it the way a counter camera would.

The pipeline follows the physics that defeat screen readers: an emissive RGB-stripe panel
(moiré against the sensor grid), perspective and rotation of a hand-held phone, exposure set
for the room (screen too bright or dark), specular glare blobs and a window veil on the glass,
defocus and hand motion, sensor noise and JPEG. Seeded: same seed, same frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import cv2
import numpy as np
import zxingcpp

LEVELS = ("easy", "medium", "hard")
FRAME_SIZE = (1280, 720)


@dataclass(frozen=True)
class Level:
    tilt_deg: float        # max out-of-plane tilt
    rotate_deg: float      # max in-plane rotation
    qr_px: tuple[int, int]  # QR side in the frame, range
    gain: tuple[float, float]
    glare: tuple[int, int]  # number of specular blobs
    glare_strength: tuple[float, float]
    veil: tuple[float, float]
    defocus: tuple[float, float]  # Gaussian sigma
    motion: tuple[int, int]       # motion-blur length in px
    noise: float
    jpeg: int
    dark_mode: float              # probability of an inverted (dark-mode) code


PARAMS = {
    "easy": Level(10, 15, (260, 360), (0.9, 1.15), (0, 1), (0.3, 0.6), (0.0, 0.1), (0.0, 0.8),
                  (0, 2), 2.0, 90, 0.0),
    "medium": Level(25, 45, (190, 300), (0.7, 1.5), (1, 1), (0.5, 0.9), (0.1, 0.3), (0.5, 1.3),
                    (0, 5), 4.0, 80, 0.15),
    "hard": Level(40, 180, (180, 270), (0.5, 1.8), (1, 2), (0.6, 1.0), (0.2, 0.4), (0.8, 1.4),
                  (1, 5), 6.0, 70, 0.25),
}


@dataclass
class Shot:
    frame: np.ndarray  # grayscale uint8, FRAME_SIZE
    text: str
    corners: np.ndarray  # 4x2 float32: QR corners (TL, TR, BR, BL) in the frame
    level: str
    seed: int


def qr_modules(text: str) -> np.ndarray:
    """The QR as a module matrix (0 dark, 255 light), no quiet zone, EC level M like VssID."""
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    return np.array(zxingcpp.write_barcode_to_image(code, scale=1, add_quiet_zones=False))


def _screen(text: str, rng: random.Random, dark: bool) -> tuple[np.ndarray, np.ndarray]:
    """Phone screen content (RGB, screen pixels) and the QR corners on it."""
    w, h = 360, 760
    bg = (24, 28, 36) if dark else (238, 242, 248)
    img = np.full((h, w, 3), bg, np.uint8)
    # app header and text lines of the card image
    cv2.rectangle(img, (0, 0), (w, 70), (20, 90, 180), -1)
    for i in range(5):
        y = 110 + i * 28
        cv2.rectangle(img, (24, y), (24 + rng.randint(120, 300), y + 12), (120, 120, 130), -1)
    modules = qr_modules(text)
    n = modules.shape[0]
    px = max(3, 300 // (n + 8))  # whole screen pixels per module, as apps draw them
    side = n * px
    x0, y0 = (w - side) // 2, 300
    qr = cv2.resize(modules, (side, side), interpolation=cv2.INTER_NEAREST)
    if dark:
        qr = 255 - qr
    pad = 4 * px  # the app draws the code on its own quiet zone
    zone = (255, 255, 255) if not dark else (0, 0, 0)
    cv2.rectangle(img, (x0 - pad, y0 - pad), (x0 + side + pad, y0 + side + pad), zone, -1)
    img[y0:y0 + side, x0:x0 + side] = qr[..., None]
    corners = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], np.float32)
    return img, corners


def _emissive(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Each screen pixel as three vertical R, G, B stripes and a dark gap row, seen in luminance."""
    h, w, _ = rgb.shape
    sub = np.zeros((h * 3, w * 3), np.float32)
    weights = (0.299 * 3, 0.587 * 3, 0.114 * 3)  # stripe luminance, normalised to white = 1
    for c, wt in enumerate(weights):
        chan = rgb[..., 2 - c].astype(np.float32) / 255.0 * wt  # BGR image: R is index 2
        sub[:, c::3] = np.repeat(chan, 3, axis=0)
    sub[2::3, :] *= 0.55  # the black matrix between pixel rows
    return sub, 3.0


def _background(rng: random.Random) -> np.ndarray:
    return _background_from(rng.randrange(2**32))


def _background_from(seed: int) -> np.ndarray:
    w, h = FRAME_SIZE
    nrng = np.random.default_rng(seed)
    low = cv2.resize(nrng.random((9, 16)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(nrng.random((h, w)).astype(np.float32), (0, 0), 3)
    return np.clip(0.25 + 0.3 * low + 0.15 * grain, 0, 1)


@dataclass
class Pose:
    """Everything about one presentation that stays the same from frame to frame: where the
    phone is, its tilt, exposure, the reflections on its glass, focus and blur."""
    side: float
    angle: float
    tilt_x: float
    tilt_y: float
    target: np.ndarray
    gain: float
    background: int                  # seed of the counter behind the phone
    blobs: list[tuple[int, np.ndarray, float, float, float]]  # corner, offset, sx, sy, strength
    veil: float
    ramp: float
    defocus: float
    motion: int
    motion_angle: float
    noise: float
    jpeg: int
    toward: float = 0.5              # blobs sit this far from the code's centre towards their corner


def draw_pose(p: Level, rng: random.Random, nrng: np.random.Generator) -> Pose:
    side = rng.uniform(*p.qr_px)
    angle = np.deg2rad(rng.uniform(-p.rotate_deg, p.rotate_deg))
    tilt_x, tilt_y = (np.deg2rad(rng.uniform(-p.tilt_deg, p.tilt_deg)) for _ in range(2))
    w, h = FRAME_SIZE
    target = np.array([w / 2 + rng.uniform(-0.2, 0.2) * w, h / 2 + rng.uniform(-0.15, 0.15) * h])
    gain = rng.uniform(*p.gain)
    background = rng.randrange(2**32)
    blobs = []
    for _ in range(rng.randint(*p.glare)):
        corner, offset = rng.randrange(4), nrng.normal(0, side / 6, 2)
        sx, sy = side * rng.uniform(0.08, 0.2), side * rng.uniform(0.05, 0.15)
        blobs.append((corner, offset, sx, sy, rng.uniform(*p.glare_strength)))
    veil = rng.uniform(*p.veil)
    ramp = rng.uniform(0.5, 1.5)
    defocus = rng.uniform(*p.defocus) + 1e-3
    motion = rng.randint(*p.motion)
    motion_angle = rng.uniform(0, 180) if motion > 1 else 0.0
    return Pose(side, angle, tilt_x, tilt_y, target, gain, background, blobs, veil, ramp, defocus, motion,
                motion_angle, p.noise, p.jpeg)


def image(text: str, lum: np.ndarray, qr_corners: np.ndarray, pose: Pose,
          nrng: np.random.Generator, glare_shift: np.ndarray | None = None, level: str = "", seed: int = 0) -> Shot:
    """Image the emissive screen `lum` (QR at `qr_corners`) through `pose`. `glare_shift` moves
    the reflections across the code (in frame pixels): what tilting the phone does."""
    sh, sw = lum.shape
    w, h = FRAME_SIZE
    scale = pose.side / (qr_corners[1, 0] - qr_corners[0, 0])
    screen_pts = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    centre = qr_corners.mean(0)
    rel = (screen_pts - centre) * scale
    # foreshortening by tilt: points farther along the tilt axis shrink (simple pinhole model)
    depth = 1 + 0.9 * (rel[:, 0] / (sw * scale) * np.sin(pose.tilt_y) + rel[:, 1] / (sh * scale) * np.sin(pose.tilt_x))
    rel = rel * np.stack([np.full(4, np.cos(pose.tilt_y)), np.full(4, np.cos(pose.tilt_x))], 1) / depth[:, None]
    rot = np.array([[np.cos(pose.angle), -np.sin(pose.angle)], [np.sin(pose.angle), np.cos(pose.angle)]], np.float32)
    frame_pts = (rel @ rot.T + pose.target).astype(np.float32)
    hmat = cv2.getPerspectiveTransform(screen_pts, frame_pts)

    # A sensor pixel integrates light over its area: low-pass the sub-pixel image to about one
    # frame pixel before resampling (warpPerspective does not area-average). Moiré survives.
    lum = cv2.GaussianBlur(lum, (0, 0), 0.42 / scale)
    screen = cv2.warpPerspective(lum * pose.gain, hmat, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones_like(lum), hmat, (w, h), flags=cv2.INTER_LINEAR)
    img = _background_from(pose.background) * (1 - mask) + screen

    # Specular glare: bright elliptical blobs on the glass over the code area; a window veil.
    qr_frame = cv2.perspectiveTransform(qr_corners.reshape(-1, 1, 2), hmat).reshape(4, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for corner, offset, sx, sy, strength in pose.blobs:
        cx, cy = qr_frame[corner] * pose.toward + qr_frame.mean(0) * (1 - pose.toward) + offset + \
            (glare_shift if glare_shift is not None else 0)
        blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        img += strength * blob * mask
    ramp = np.clip((xx / w) * pose.ramp, 0, 1)
    img = img * (1 - pose.veil * ramp * mask) + pose.veil * ramp * mask

    img = cv2.GaussianBlur(img, (0, 0), pose.defocus)
    if pose.motion > 1:
        length = pose.motion
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        rot_m = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), pose.motion_angle, 1)
        kernel = cv2.warpAffine(kernel, rot_m, (length, length))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    img = img * 255 + nrng.normal(0, pose.noise, img.shape)
    frame = np.clip(img, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, pose.jpeg])
    frame = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return Shot(frame, text, qr_frame.astype(np.float32), level, seed)


def screen_of(text: str, level: str, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """The phone's emissive screen in luminance and the QR corners on it."""
    screen_rgb, qr_corners = _screen(text, rng, dark=rng.random() < PARAMS[level].dark_mode)
    lum, k = _emissive(screen_rgb)
    return lum, qr_corners * k


def render(text: str, level: str = "medium", seed: int = 0) -> Shot:
    """One camera frame of a phone showing `text` as a QR, at the given difficulty."""
    p = PARAMS[level]
    rng = random.Random(f"{level}:{seed}")
    nrng = np.random.default_rng(rng.randrange(2**32))
    lum, qr_corners = screen_of(text, level, rng)
    pose = draw_pose(p, rng, nrng)
    return image(text, lum, qr_corners, pose, nrng, level=level, seed=seed)


def empty_scene(seed: int = 0) -> np.ndarray:
    """The counter with nobody in front of it: background, noise, JPEG."""
    rng = random.Random(f"empty:{seed}")
    img = _background(rng) * 255 + np.random.default_rng(seed).normal(0, 3, FRAME_SIZE[::-1])
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
