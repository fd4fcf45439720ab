"""The labelled real photographs in ../shared/datasets/qr-photos, and the team's scoring rule."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHOTOS = Path(os.environ.get("QR_PHOTOS", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "qr-photos"))


@dataclass
class Photo:
    category: str
    path: Path
    polygons: list[np.ndarray]  # labelled corners, 4x2 each

    def gray(self) -> np.ndarray:
        return cv2.imread(str(self.path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)


def load_photos(root: Path = PHOTOS) -> list[Photo]:
    """All labelled photos; a missing dataset is an error with the path, never a silent skip."""
    if not root.is_dir():
        raise FileNotFoundError(f"QR photo dataset not found at {root} (expected ../shared beside the "
                                "repository, or set QR_PHOTOS)")
    photos = []
    for jpg in sorted(root.glob("*/*.jpg")):
        polys = []
        for line in jpg.with_suffix(".txt").read_text().splitlines():
            values = line.split()
            if len(values) == 8 and not line.startswith("#"):
                polys.append(np.array(values, np.float32).reshape(4, 2))
        photos.append(Photo(jpg.parent.name, jpg, polys))
    if not photos:
        raise FileNotFoundError(f"no labelled photos under {root}")
    return photos


def codes_read(polygons: list[np.ndarray], corners: list) -> int:
    """A labelled code counts as read when the centre of a decoded code's corners lies inside it."""
    centres = [np.asarray(c, np.float32).reshape(4, 2).mean(0) for c in corners]
    return sum(any(cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0
                   for x, y in centres) for poly in polygons)


def erase_codes(photo: Photo, gray: np.ndarray) -> np.ndarray:
    """The photo with every labelled code painted over: a realistic frame with no code in it."""
    out = gray.copy()
    fill = int(np.median(gray))
    for poly in photo.polygons:
        (x0, y0), (x1, y1) = poly.min(0) - 12, poly.max(0) + 12
        cv2.rectangle(out, (int(max(x0, 0)), int(max(y0, 0))), (int(x1), int(y1)), fill, -1)
    return out


def sim_frames(per_level: int) -> list[tuple[str, np.ndarray, str]]:
    """(level, frame, payload): the seeded simulated phone screens every decoder benchmark uses."""
    from agent.sim.payloads import bhyt
    from agent.sim.screen import LEVELS, render

    frames = []
    for level in LEVELS:
        for i in range(per_level):
            shot = render(bhyt(random.Random(f"bench{i}")), level, 5000 + i)
            frames.append((level, shot.frame, shot.text))
    return frames
