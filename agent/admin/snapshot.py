"""`scanner-agent snapshot OUT.jpg`: the current camera frame with detected codes and
saturated (glare) areas drawn on it, to aim the camera and check focus from a laptop."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agent import runstate
from agent.admin.files import check_target, write_private
from agent.config import Config
from agent.control import request
from agent.decode import Code, decode

SATURATED = 250


def annotate(gray: np.ndarray, codes: list[Code]) -> np.ndarray:
    """BGR image: glare in red, codes outlined in green, a line of figures at the top."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    glare = gray >= SATURATED
    img[glare] = (0, 0, 255)
    for code in codes:
        pts = np.array(code.corners, np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], True, (0, 200, 0), 3)
    sharp = cv2.Laplacian(gray, cv2.CV_64F).var()
    text = (f"{len(codes)} code(s)  mean level {gray.mean():.0f}  saturated {100 * glare.mean():.1f}%  "
            f"sharpness {sharp:.0f}")
    scale = max(0.4, img.shape[1] / 1800)
    (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (img.shape[1], th + 16), (0, 0, 0), -1)
    cv2.putText(img, text, (8, th + 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def encode(gray: np.ndarray, codes: list[Code]) -> bytes:
    ok, buf = cv2.imencode(".jpg", annotate(gray, codes), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def from_camera(cfg: Config) -> bytes:
    """With the daemon stopped: open the camera, let exposure settle a few frames, decode, annotate."""
    from agent.capture import open_source
    from agent.station import DEMO_FRAMES

    src = open_source(cfg.camera, demo_frames=str(DEMO_FRAMES))
    src.open()
    try:
        frame = None
        for _ in range(1 if cfg.camera.source == "replay" else 10):
            frame = src.read() or frame
    finally:
        src.close()
    if frame is None:
        raise RuntimeError("the camera gave no frame")
    return encode(frame.gray, decode(frame.gray).codes)


def take(cfg: Config, out: Path) -> str:
    """Write the snapshot (a fresh file, mode 0600, never into the state directory); returns where
    it came from."""
    check_target(out, Path(cfg.station.state_dir))  # refuse before opening the camera
    sock = runstate.runtime_dir(cfg.station.state_dir) / "control.sock"
    if runstate.read(sock.parent / "status.json") is not None and sock.exists():
        data, origin = request(sock, "snapshot"), "running daemon"
    else:
        data, origin = from_camera(cfg), f"camera ({cfg.camera.source}), daemon not running"
    write_private(out, lambda f: f.write(data), Path(cfg.station.state_dir))
    return origin
