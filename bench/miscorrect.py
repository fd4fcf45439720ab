"""Miscorrections: texts the stream decoder reads that are not there, per million frames, and the
red "not a card" signals the station gives for them, before and after the confirmation of
second-stage reads (agent/checkin/presentation.py).

    .venv/bin/python bench/miscorrect.py [--sets textures,held,camera,vcam] [--textures 10000]
        [--held 40] [--camera 20] [--vcam 20] [--vcam-seeds 5,6] [--jobs 2] [--json FILE]

Every frame goes through a FrameReader, all its stages, as the station runs it (one reader for a
stream of frames, the scene active, the camera's view when it has one), and its result through the
station's Presenter twice: as it is (`after`) and with every code labelled a zxing-cpp read, which
is all the logic before the confirmation looked at (`before`). A text is wrong when it is not the
payload shown (any text on a frame with no code).

Sets:
- textures: --textures frames (default 10,000) with no readable code, in clips of CLIP frames (one
  scene held with hand tremor and fresh sensor noise in every frame, so fusion and hidden-finder
  inference run as they do on a held phone), ten kinds, a tenth each: noise, blocks (random
  modules, no finder patterns), text, checker (checkerboards and stripes), moire, photos
  (../shared/datasets/qr-photos with the labelled codes painted over), screens (agent/sim phone
  screens without a QR), finders (QR function patterns around a blank, random, or random data
  area with valid format information), occluded (a card's QR 35-60% hidden by a highlight, a dark
  patch, random modules, or the frame's edge) and flipped (a card's QR with 20-45% of its data
  modules inverted). The last three are imaged as phone screens (agent/sim/screen.py). Reading the
  hidden card's own payload is not wrong (counted as recovered).
- held: agent/sim/held.py presentations (bench/held.py's payloads and seeds; easy, medium, hard),
  1 s of empty counter between patients, one reader per level; every frame.
- camera: bench/replay.py's scenes (bench/camera.py's, on agent/sim/vcam), medium and hard, fixed
  and auto, every frame the camera gives (the decoder drops none).
- vcam: the second camera (../shared/vcam; segno on PYTHONPATH), its own counter (empty spells,
  hands crossing, phones), medium and hard, fixed and auto, through the product's Picamera2Source
  and capture loop with the camera's clock made virtual (no waiting); every frame.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from agent.cards import read_card  # noqa: E402
from agent.checkin import CHECKIN_VERDICTS, Action, Presenter, card_key  # noqa: E402
from agent.decode import DecodeResult, FrameReader  # noqa: E402
from agent.decode import qrspec  # noqa: E402

QR = zxingcpp.BarcodeFormat.QRCode
W, H = 1280, 720
FPS = 15.0
#: frames of one held scene in the texture set
CLIP = 10
KINDS = ("noise", "blocks", "text", "checker", "moire", "photos", "screens", "finders", "occluded", "flipped")
VCAM = ROOT.parent / "shared" / "vcam"


# -- the tally -------------------------------------------------------------------------------

@dataclass
class Tally:
    frames: int = 0
    code_frames: int = 0
    located: int = 0                                       # frames with something code-like located
    decode_s: float = 0.0
    right: Counter = field(default_factory=Counter)      # strategy -> reads of the payload shown
    wrong: Counter = field(default_factory=Counter)      # strategy -> wrong texts
    wrong_kind: Counter = field(default_factory=Counter)  # valid card / invalid card / not a card
    samples: list = field(default_factory=list)           # a few wrong texts, to look at
    #: "before" / "after" -> counts of the station's decisions
    reds: Counter = field(default_factory=Counter)
    reds_card_shown: Counter = field(default_factory=Counter)
    checkins_wrong: Counter = field(default_factory=Counter)
    shown: int = 0                                         # presentations of a card
    checked_in: Counter = field(default_factory=Counter)  # ... whose card was checked in
    #: each presentation of a code that is not a card (a bank QR): [the frame its payload was
    #: first read, its first red before, after] (0 = its first frame; None: never)
    noncard: list = field(default_factory=list)

    def merge(self, other: "Tally") -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, Counter):
                mine.update(value)
            elif name == "samples":
                mine += value[:max(0, 20 - len(mine))]
            elif isinstance(value, list):
                mine += value
            else:
                setattr(self, name, mine + value)


def _kind(raw: bytes) -> str:
    read = read_card(raw)
    if read.is_card and read.verdict in CHECKIN_VERDICTS:
        return "valid card"
    return "invalid card" if read.is_card else "not a card"


class Judge:
    """One stream of frames as the station sees it: its reader's results scored against what was
    shown, and through the station's presentation logic before and after the confirmation."""

    def __init__(self, tally: Tally, label: str):
        self.tally, self.label = tally, label
        self.presenters = {"before": Presenter(), "after": Presenter()}
        self._presentation: object = None
        self._done: dict[str, bool] = {}
        self._want: str | None = None
        self._noncard: list | None = None                # this presentation's entry in tally.noncard
        self._index = 0                                   # frames into the presentation

    def frame(self, t: float, result: DecodeResult, truth: str | None, presentation: object,
              decode_s: float = 0.0) -> None:
        """`truth`: the payload shown (None: no code); `presentation`: what groups the frames of one
        patient (a card shown is counted once)."""
        tally = self.tally
        tally.frames += 1
        tally.code_frames += truth is not None
        tally.located += bool(result.codes or result.candidates or result.unread)
        tally.decode_s += decode_s
        if presentation != self._presentation:
            self._presentation = presentation
            card = truth is not None and read_card(truth).is_card
            self._want = card_key(read_card(truth), truth) if card else None
            self._done = {"before": False, "after": False}
            tally.shown += card
            self._noncard = [None, None, None] if truth is not None and not card else None
            if self._noncard is not None:
                tally.noncard.append(self._noncard)
            self._index = 0
        else:
            self._index += 1
        if self._noncard is not None and self._noncard[0] is None and any(c.text == truth for c in result.codes):
            self._noncard[0] = self._index
        for code in result.codes:
            if truth is not None and code.text == truth:
                tally.right[code.strategy] += 1
                continue
            tally.wrong[code.strategy] += 1
            tally.wrong_kind[_kind(code.raw)] += 1
            if len(tally.samples) < 20:
                tally.samples.append((self.label, code.strategy, _kind(code.raw), code.text[:80]))
        relabelled = replace(result, codes=[replace(c, strategy="plain") for c in result.codes])
        for when, res in (("before", relabelled), ("after", result)):
            for d in self.presenters[when].on_frame(t, res):
                if d.action == Action.REJECTED:
                    tally.reds[when] += 1
                    tally.reds_card_shown[when] += self._want is not None
                    slot = 1 if when == "before" else 2
                    if self._noncard is not None and self._noncard[slot] is None:
                        self._noncard[slot] = self._index
                elif d.action == Action.CHECKIN:
                    if d.key == self._want and not self._done[when]:
                        self._done[when] = True
                        tally.checked_in[when] += 1
                    elif d.key != self._want:
                        tally.checkins_wrong[when] += 1


def _read(reader: FrameReader, gray: np.ndarray, view=None) -> tuple[DecodeResult, float]:
    t0 = time.perf_counter()
    result = reader.read(gray, view=view)
    return result, time.perf_counter() - t0


# -- textures: frames with no readable code ---------------------------------------------------

def _perspective(img: np.ndarray, rng: random.Random, strength: float, fill: int) -> np.ndarray:
    h, w = img.shape[:2]
    d = strength * min(w, h)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + np.float32([[rng.uniform(-d, d), rng.uniform(-d, d)] for _ in range(4)])
    m = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def _noise(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    scale = rng.choice((1, 2, 4, 8, 16))
    base = nrng.random((H // scale + 1, W // scale + 1)).astype(np.float32)
    img = cv2.resize(base, (W, H), interpolation=rng.choice((cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_CUBIC)))
    sigma = rng.uniform(0, 3)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    lo, hi = sorted((rng.uniform(0, 200), rng.uniform(60, 255)))
    return np.clip(lo + (hi - lo) * img, 0, 255)


def _blocks(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """Random dark and light modules (QR-like data without finder patterns), whole frame or a patch."""
    cell = rng.uniform(2.5, 10)
    n = int(rng.uniform(25, 90))
    bits = (nrng.random((n, n)) < 0.5).astype(np.float32)
    side = int(n * cell)
    patch = cv2.resize(bits, (side, side), interpolation=cv2.INTER_NEAREST)
    canvas = np.full((H, W), 1.0, np.float32) * rng.uniform(0.3, 0.9)
    if side >= min(W, H) or rng.random() < 0.3:
        reps = (H // side + 1, W // side + 1)
        canvas = np.tile(patch, reps)[:H, :W]
    else:
        x, y = rng.randrange(0, W - side), rng.randrange(0, H - side)
        canvas[y:y + side, x:x + side] = patch
    canvas = _perspective(canvas, rng, 0.15, 1)
    return 40 + 180 * canvas


def _text(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    dark = rng.random() < 0.25
    img = np.full((H, W), 30 if dark else rng.randint(170, 250), np.uint8)
    ink = 220 if dark else rng.randint(0, 80)
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
             cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
    size = rng.uniform(0.5, 2.5)
    y = rng.randint(10, 40)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789|/-:.#"
    while y < H:
        x = rng.randint(0, 60)
        while x < W:
            word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
            cv2.putText(img, word, (x, y), rng.choice(fonts), size, ink, rng.randint(1, 3), cv2.LINE_AA)
            x += int(size * 22 * (len(word) + 1))
        y += int(size * 34) + rng.randint(2, 12)
        if rng.random() < 0.08:
            cv2.line(img, (0, y), (W, y), ink, rng.randint(1, 3))
    return _perspective(img, rng, 0.1, int(img[0, 0])).astype(np.float32)


def _checker(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(4, 40)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if rng.random() < 0.7:
        pattern = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:   # stripes, like a 1-D barcode or blinds
        widths = np.floor(u / period * rng.choice((1, 2, 3))) % 2
        pattern = widths.astype(np.float32)
    pattern = _perspective(pattern, rng, 0.12, 0)
    sigma = rng.uniform(0, 2)
    if sigma > 0.3:
        pattern = cv2.GaussianBlur(pattern, (0, 0), sigma)
    return 30 + rng.uniform(100, 210) * pattern


def _moire(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if rng.random() < 0.5:
        img = np.zeros((H, W), np.float32)
        for _ in range(2):
            f = rng.uniform(0.2, 1.2)
            a = rng.uniform(0, np.pi)
            img += np.cos(f * (xx * np.cos(a) + yy * np.sin(a)))
        img = 128 + 60 * img
    else:    # a monitor's sub-pixel grid seen by the sensor: a fine pattern, resampled
        pitch = rng.uniform(2.2, 4.5)
        fine = ((np.floor(xx * 3 / pitch) % 3 == 0) * 0.8 + (np.floor(yy / pitch) % 2 == 0) * 0.4).astype(np.float32)
        big = cv2.resize(fine, None, fx=1.7, fy=1.7, interpolation=cv2.INTER_NEAREST)
        m = cv2.getRotationMatrix2D((W / 2, H / 2), rng.uniform(-8, 8), rng.uniform(0.5, 0.62))
        img = 40 + 150 * cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR)
    return img


_photos: list | None = None


def _photo(rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    global _photos
    from dataset import erase_codes, load_photos
    if _photos is None:
        _photos = load_photos()
    photo = rng.choice(_photos)
    gray = erase_codes(photo, photo.gray())
    h, w = gray.shape
    scale = max(W / w, H / h) * rng.uniform(1.0, 1.3)
    big = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    y, x = rng.randrange(0, big.shape[0] - H + 1), rng.randrange(0, big.shape[1] - W + 1)
    return big[y:y + H, x:x + W].astype(np.float32)


def _modules(text: str, ecl: str) -> np.ndarray:
    """The QR of `text` as modules, 1 = dark, no quiet zone."""
    code = zxingcpp.create_barcode(text, QR, ec_level=ecl)
    return (np.array(zxingcpp.write_barcode_to_image(code, scale=1, add_quiet_zones=False)) < 128).astype(np.uint8)


def _payload(rng: random.Random) -> str:
    from agent.sim.payloads import bhyt, cccd
    return bhyt(rng) if rng.random() < 0.7 else cccd(rng)


def _screen_with(rng: random.Random, modules: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A phone screen (RGB) like agent/sim/screen.py's, with `modules` (1 = dark) where the QR goes,
    or (None) a card page with no QR; and where the code area is on it."""
    w, h = 360, 760
    img = np.full((h, w, 3), (238, 242, 248), np.uint8)
    cv2.rectangle(img, (0, 0), (w, 70), (20, 90, 180), -1)
    for i in range(5):
        y = 110 + i * 28
        cv2.rectangle(img, (24, y), (24 + rng.randint(120, 300), y + 12), (120, 120, 130), -1)
    n = modules.shape[0] if modules is not None else 41
    px = max(3, 300 // (n + 8))
    side = n * px
    x0, y0 = (w - side) // 2, 300
    if modules is None:                  # a card picture, a photo, lines of text in its place
        for _ in range(rng.randint(3, 12)):
            x, y = rng.randrange(x0, x0 + side - 20), rng.randrange(y0, y0 + side - 10)
            colour = tuple(rng.randrange(256) for _ in range(3))
            cv2.rectangle(img, (x, y), (x + rng.randint(10, 150), y + rng.randint(5, 60)), colour, -1)
        for i in range(rng.randint(0, 8)):
            cv2.putText(img, "".join(rng.choice("ABCDEFGHIJ0123456789") for _ in range(12)),
                        (x0, y0 + 20 + 24 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (30, 30, 40), 1, cv2.LINE_AA)
    else:
        qr = cv2.resize((1 - modules) * 255, (side, side), interpolation=cv2.INTER_NEAREST).astype(np.uint8)
        pad = 4 * px
        cv2.rectangle(img, (x0 - pad, y0 - pad), (x0 + side + pad, y0 + side + pad), (255, 255, 255), -1)
        img[y0:y0 + side, x0:x0 + side] = qr[..., None]
    corners = np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], np.float32)
    return img, corners


def _damaged(kind: str, rng: random.Random, nrng: np.random.Generator) -> tuple[np.ndarray, str | None]:
    """(module grid, payload it hides or None) for the finders / occluded / flipped kinds."""
    if kind == "finders":
        text = "".join(rng.choice("0123456789ABCDEFabcdef|") for _ in range(rng.randint(10, 300)))
        modules = _modules(text, rng.choice("LMQH"))
        n = modules.shape[0]
        func, _, _ = qrspec.function_pattern((n - 17) // 4)
        style = rng.choice(("blank", "random", "random, valid format"))
        if style == "blank":
            modules[~func] = 0                     # finder, timing, alignment patterns and nothing else
        else:
            modules[~func] = nrng.random(int((~func).sum())) < 0.5
            if style == "random":                  # the format bits random too
                for r, c in sum(qrspec.format_positions(n), []):
                    modules[r, c] = rng.random() < 0.5
        return modules, None
    text = _payload(rng)
    modules = _modules(text, "M")
    n = modules.shape[0]
    version = (n - 17) // 4
    func, _, _ = qrspec.function_pattern(version)
    if kind == "flipped":
        share = rng.uniform(0.20, 0.45)
        flip = (~func) & (nrng.random((n, n)) < share)
        modules[flip] ^= 1
        return modules, text
    # occluded: a block of 35-60% of the area, away from at least two finders
    area = rng.uniform(0.35, 0.60)
    bw = int(n * rng.uniform(max(area, 0.45), 1.0))
    bh = min(n, int(round(area * n * n / bw)))
    x0 = rng.choice((0, n - bw)) if rng.random() < 0.5 else rng.randrange(0, n - bw + 1)
    y0 = n - bh if rng.random() < 0.6 else rng.randrange(0, n - bh + 1)
    block = np.zeros((n, n), bool)
    block[y0:y0 + bh, x0:x0 + bw] = True
    style = rng.choice(("light", "dark", "random", "random"))
    if style == "light":
        modules[block] = 0
    elif style == "dark":
        modules[block] = 1
    else:
        modules[block] = nrng.random(int(block.sum())) < 0.5
    return modules, text


def _imaged(kind: str, rng: random.Random, nrng: np.random.Generator):
    """(screen luminance, code corners on it, pose, payload hidden or None): a phone showing no code,
    or a damaged one, as agent/sim/screen.py images phones."""
    from agent.sim.screen import PARAMS, _emissive, draw_pose
    modules, text = (None, None) if kind == "screens" else _damaged(kind, rng, nrng)
    rgb, corners = _screen_with(rng, modules)
    lum, k = _emissive(rgb)
    level = rng.choice(("easy", "medium", "hard"))
    pose = draw_pose(PARAMS[level], rng, nrng)
    if kind == "occluded" and rng.random() < 0.25:     # the code half out of the frame instead
        text = _payload(rng)
        modules = _modules(text, "M")
        rgb, corners = _screen_with(rng, modules)
        lum, k = _emissive(rgb)
        pose = replace(pose, target=np.array([rng.choice((0.0, float(W))), pose.target[1]]))
    return lum, corners * k, pose, text


def texture_clip(kind: str, index: int):
    """The CLIP frames of one held scene of `kind`: (gray, payload hidden or None)."""
    rng = random.Random(f"miscorrect:{kind}:{index}")
    nrng = np.random.default_rng(rng.randrange(2**32))
    if kind in ("screens", "finders", "occluded", "flipped"):
        from agent.sim.screen import image
        lum, corners, pose, text = _imaged(kind, rng, nrng)
        jitter = np.zeros(2)
        for _ in range(CLIP):
            jitter = 0.7 * jitter + nrng.normal(0, 1.2, 2)
            frame_pose = replace(pose, target=pose.target + jitter)
            yield image(text or "", lum, corners, frame_pose, np.random.default_rng(nrng.integers(2**32))).frame, text
        return
    make = {"noise": _noise, "blocks": _blocks, "text": _text, "checker": _checker, "moire": _moire,
            "photos": _photo}[kind]
    base = make(rng, nrng).astype(np.float32)
    sigma = rng.uniform(1.5, 5)
    jitter = np.zeros(2)
    for _ in range(CLIP):
        jitter = 0.7 * jitter + nrng.normal(0, 1.0, 2)
        m = np.float32([[1, 0, jitter[0]], [0, 1, jitter[1]]])
        moved = cv2.warpAffine(base, m, (W, H), borderMode=cv2.BORDER_REFLECT)
        gray = np.clip(moved + sigma * nrng.standard_normal(moved.shape, np.float32), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 85])
        yield cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), None


def run_textures(kind: str, clips: int) -> dict:
    tally, reader = Tally(), FrameReader()
    judge = Judge(tally, f"textures/{kind}")
    t = 0.0
    for c in range(clips):
        for gray, text in texture_clip(kind, c):
            result, spent = _read(reader, gray)
            judge.frame(t, result, text, (kind, c), spent)
            t += 1 / FPS
        t += 2.0                            # the next scene: another patient, another object
    return {"set": "textures", "part": kind, "tally": tally}


# -- camera sets ------------------------------------------------------------------------------

def _held_phones(name: str, level: str, n: int, payload_of, seed_of) -> dict:
    """n phones held up (agent/sim/held.py), each after 1 s of empty counter, every frame decoded."""
    from agent.sim.held import presentation
    from agent.sim.screen import empty_scene
    tally, reader = Tally(), FrameReader()
    judge = Judge(tally, f"{name}/{level}")
    empties = [empty_scene(i) for i in range(15)]
    t = 0.0
    for k in range(n):
        payload = payload_of(k)
        for i, gray in enumerate(empties):                      # 1 s of empty counter
            result, spent = _read(reader, gray)
            judge.frame(t + i / FPS, result, None, ("empty", k), spent)
        t += 1.0
        for f in presentation(payload, level, seed_of(k)):
            result, spent = _read(reader, f.shot.frame)
            judge.frame(t + f.t, result, payload, k, spent)
        t += 3.0
    return {"set": name, "part": level, "tally": tally}


def run_held(level: str, n: int) -> dict:
    from agent.sim.payloads import bhyt, cccd

    def payload(k: int) -> str:
        rng = random.Random(f"held-bench:{level}:{k}")           # bench/held.py's payloads
        return bhyt(rng) if k % 3 else cccd(rng)
    return _held_phones("held", level, n, payload, lambda k: k)


def vietqr(rng: random.Random) -> str:
    """A VietQR (EMVCo) transfer code to a made-up account: what a patient holding up a bank app
    shows; not a card."""
    def tlv(tag: str, value: str) -> str:
        return f"{tag}{len(value):02d}{value}"
    account = "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 14)))
    bank = tlv("00", rng.choice(("970436", "970415", "970418", "970422", "970405")))
    info = tlv("00", "A000000727") + tlv("01", bank + tlv("01", account)) + tlv("02", "QRIBFTTA")
    body = tlv("00", "01") + tlv("01", rng.choice(("11", "12"))) + tlv("38", info) + tlv("53", "704")
    if rng.random() < 0.5:
        body += tlv("54", str(rng.randrange(10_000, 5_000_000, 1000)))
    body += tlv("58", "VN") + "6304"
    crc = 0xFFFF
    for byte in body.encode():
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return body + f"{crc:04X}"


def run_bank(level: str, n: int) -> dict:
    """Held-up bank QRs (not a card): each must get its red, and at once."""
    return _held_phones("bank", level, n, lambda k: vietqr(random.Random(f"miscorrect-bank:{level}:{k}")),
                        lambda k: 1000 + k)


def run_camera(level: str, control: str, n: int) -> dict:
    import replay                          # agent/sim/vcam's picamera2 first on the path
    tally = Tally()
    judge = Judge(tally, f"camera/{level}/{control}")
    for seed in range(n):
        last = time.perf_counter()
        for t, _, result, text in replay.frames(level, seed, control, pi_factor=0.0):
            now = time.perf_counter()
            # one patient after another, 10 s apart; the time spent includes the camera's rendering
            judge.frame(10.0 * seed + t, result, text, seed, now - last)
            last = now
    return {"set": "camera", "part": f"{level} {control}", "tally": tally}


def run_vcam(level: str, seed: int, control: str, n: int) -> dict:
    """The second camera's counter through the product's picamera2 source and loop, on a virtual
    clock: the camera's and the source's (which trusts sensor timestamps near its own clock)."""
    os.environ.update(VCAM_SEED=str(seed), VCAM_LEVEL=level, VCAM_N=str(n))
    sys.path.insert(0, str(VCAM))
    import picamera2 as vcam
    from picamera2 import picamera2 as vcam_module
    from vcamsim import VirtualClock, camera as vcam_camera

    clocks: list = []

    def virtual_clock():
        clocks.append(VirtualClock(time.monotonic()))
        return clocks[-1]
    vcam_module.RealClock = virtual_clock
    import agent.capture.picam as picam
    picam.now = lambda: clocks[-1].time()      # the source's clock is the camera's, virtual too
    truth: dict[int, tuple[int, str | None]] = {}
    next_frame = vcam_camera.Pipeline.next_frame

    def record(self):
        rec = next_frame(self)
        pres = self.world.presentations[min(rec.scene.index, self.world.n - 1)]
        truth[rec.mono_ns] = (rec.scene.index, pres.text if rec.scene.tau < self.world.n * 5.5 else None)
        return rec
    vcam_camera.Pipeline.next_frame = record

    from agent.capture.picam import Picamera2Source
    from agent.config import CameraConfig
    src = Picamera2Source(replace(CameraConfig(), source="picamera2", fps=30.0, control=control),
                          factory=vcam.Picamera2)
    src.open()
    tally, reader = Tally(), FrameReader()
    judge = Judge(tally, f"vcam/{level}/{control}")
    try:
        while True:
            frame = src.read()
            stamp = min(truth, key=lambda ns: abs(ns - frame.t * 1e9))
            if abs(stamp - frame.t * 1e9) > 1e6:
                raise RuntimeError("vcam: a frame's time does not match a sensor timestamp")
            j, text = truth.pop(stamp)
            for old in [ns for ns in truth if ns < stamp]:
                del truth[old]
            if text is None:
                break
            result, spent = _read(reader, frame.gray, frame.view)
            src.steer(frame, result, True)
            judge.frame(frame.t, result, text, j, spent)
    finally:
        src.close()
    return {"set": "vcam", "part": f"{level} {control}", "tally": tally}


# -- running and reporting --------------------------------------------------------------------

def _task(job: tuple) -> dict:
    name, args = job
    t0 = time.perf_counter()
    run = {"textures": run_textures, "held": run_held, "bank": run_bank, "camera": run_camera, "vcam": run_vcam}
    out = run[name](*args)
    out["seconds"] = time.perf_counter() - t0
    return out


def jobs(args) -> list[tuple]:
    sets = args.sets.split(",")
    out = []
    if "textures" in sets:
        clips = max(1, args.textures // CLIP // len(KINDS))
        out += [("textures", (kind, clips)) for kind in KINDS]
    if "held" in sets:
        out += [("held", (level, args.held)) for level in ("easy", "medium", "hard")]
    if "bank" in sets:
        out += [("bank", (level, args.bank)) for level in ("easy", "medium", "hard")]
    if "camera" in sets:
        out += [("camera", (level, control, args.camera)) for level in ("medium", "hard")
                for control in ("fixed", "auto")]
    if "vcam" in sets:
        seeds = [int(s) for s in args.vcam_seeds.split(",")]
        out += [("vcam", (level, seed, control, args.vcam)) for level, seed in zip(("medium", "hard"), seeds)
                for control in ("fixed", "auto")]
    return out


def per_million(n: int, frames: int) -> str:
    return f"{n} ({n / frames * 1e6:.0f})" if frames else "-"


def report(results: list[dict]) -> None:
    sets: dict[str, Tally] = {}
    for r in results:
        sets.setdefault(r["set"], Tally()).merge(r["tally"])
    for r in results:
        sets.setdefault(f"{r['set']}/{r['part']}", Tally()).merge(r["tally"])
    strategies = sorted({s for t in sets.values() for s in t.wrong} | {"bitlevel", "fused", "finders"})
    print("Wrong texts, count (per million frames), by the strategy that read them; frames where "
          "something code-like was located or read (what the second stage works on), and right reads "
          "by the second stage, for scale")
    head = ["set", "frames", "with a code", "with a code located", "wrong texts", *[f"wrong, {s}" for s in strategies],
            "what the wrong texts parse as", "right reads, 2nd stage / all", "ms a frame"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, t in sets.items():
        second = sum(n for s, n in t.right.items() if s in ("bitlevel", "fused", "finders"))
        cells = [name, str(t.frames), str(t.code_frames), str(t.located), per_million(sum(t.wrong.values()), t.frames),
                 *[per_million(t.wrong[s], t.frames) for s in strategies],
                 ", ".join(f"{k} {v}" for k, v in t.wrong_kind.items()) or "-",
                 f"{second} / {sum(t.right.values())}", f"{t.decode_s / max(t.frames, 1) * 1000:.1f}"]
        print("| " + " | ".join(cells) + " |")
    print("\nThe station's presentation logic on the same results: red signals, count (per million "
          "frames), before and after the confirmation of second-stage reads")
    head = ["set", "reds before", "reds after", "reds while a card is shown, before / after",
            "wrong check-ins, before / after", "cards shown / checked in before / after"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, t in sets.items():
        cells = [name, per_million(t.reds["before"], t.frames), per_million(t.reds["after"], t.frames),
                 f"{t.reds_card_shown['before']} / {t.reds_card_shown['after']}",
                 f"{t.checkins_wrong['before']} / {t.checkins_wrong['after']}",
                 f"{t.shown} / {t.checked_in['before']} / {t.checked_in['after']}"]
        print("| " + " | ".join(cells) + " |")
    banks = {name: t for name, t in sets.items() if t.noncard}
    if banks:
        print("\nA code that is not a card held up (bank QRs): presentations, the frame its payload "
              "was first read (0 = its first frame), and its first red, before and after")
        head = ["set", "shown", "read", "first read, mean frame", "red before", "red after",
                "red after the first read, frames: before (mean / max)", "after (mean / max)"]
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for name, t in banks.items():
            def lag(slot: int) -> str:
                lags = [p[slot] - p[0] for p in t.noncard if p[0] is not None and p[slot] is not None]
                return f"{np.mean(lags):.2f} / {max(lags)}" if lags else "-"
            read = [p[0] for p in t.noncard if p[0] is not None]
            cells = [name, str(len(t.noncard)), str(len(read)), f"{np.mean(read):.1f}" if read else "-",
                     str(sum(p[1] is not None for p in t.noncard)), str(sum(p[2] is not None for p in t.noncard)),
                     lag(1), lag(2)]
            print("| " + " | ".join(cells) + " |")
    samples = [s for r in results for s in r["tally"].samples]
    if samples:
        print("\nwrong texts (the first 20): set, strategy, what it parses as, text")
        for s in samples[:20]:
            print("   ", s)
    print("\nseconds per task:", ", ".join(f"{r['set']}/{r['part']} {r['seconds']:.0f}" for r in results))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="textures,held,bank,camera,vcam")
    ap.add_argument("--textures", type=int, default=10000, help="frames of the texture set")
    ap.add_argument("--held", type=int, default=40, help="held presentations per level")
    ap.add_argument("--bank", type=int, default=20, help="held bank QR presentations per level")
    ap.add_argument("--camera", type=int, default=20, help="bench/replay.py presentations per level and control")
    ap.add_argument("--vcam", type=int, default=20, help="second-camera presentations per level and control")
    ap.add_argument("--vcam-seeds", default="5,6", help="the second camera's seeds, medium then hard")
    ap.add_argument("--jobs", type=int, default=1, help="processes (each task in a fresh one)")
    ap.add_argument("--json", help="write every task's tally here")
    args = ap.parse_args()
    if "vcam" in args.sets.split(","):
        import importlib.util
        if not (VCAM / "vcamsim").is_dir() or importlib.util.find_spec("segno") is None:
            print(f"the vcam set needs the second camera at {VCAM} and segno on PYTHONPATH "
                  "(its README); or leave it out: --sets textures,held,bank,camera", file=sys.stderr)
            return 2
    todo = jobs(args)
    t0 = time.perf_counter()
    # a fresh process per task: bench/replay.py and the second camera each bring a `picamera2`
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.jobs, maxtasksperchild=1) as pool:
        results = pool.map(_task, todo, chunksize=1)
    print(f"bench/miscorrect.py: {len(todo)} tasks in {time.perf_counter() - t0:.0f} s, "
          f"{args.jobs} process(es)\n")
    report(results)
    if args.json:
        plain = [{**r, "tally": {k: dict(v) if isinstance(v, dict) else v for k, v in vars(r["tally"]).items()}}
                 for r in results]
        Path(args.json).write_text(json.dumps(plain, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
