"""A camera frame with what the decoder saw drawn on it: codes outlined in green, saturated
(glare) areas in red, a line of figures at the top. Used by `scanner-agent snapshot`, from the
running daemon (over the control socket) or straight from the camera."""

from __future__ import annotations

import cv2
import numpy as np

from agent.capture.view import SATURATED, View
from agent.decode import Code


def annotate(gray: np.ndarray, codes: list[Code], guidance: str | None = None,
             view: View | None = None) -> np.ndarray:
    """BGR image: glare in red, codes outlined in green, a line of figures at the top (with why a
    located code was not read: agent.decode.guidance; and the crop and exposure the frame was
    taken with, when the camera says)."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    glare = gray >= SATURATED
    img[glare] = (0, 0, 255)
    for code in codes:
        pts = np.array(code.corners, np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], True, (0, 200, 0), 3)
    sharp = cv2.Laplacian(gray, cv2.CV_64F).var()
    text = (f"{len(codes)} code(s)  mean level {gray.mean():.0f}  saturated {100 * glare.mean():.1f}%  "
            f"sharpness {sharp:.0f}") + (f"  unread: {guidance}" if guidance else "")
    if view is not None:
        x, y, w, h = view.crop
        text += f"  crop {w}x{h}+{x}+{y}  exposure {view.exposure_us} us gain {view.gain:.1f}"
    scale = max(0.4, img.shape[1] / 1800)
    (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(img, (0, 0), (img.shape[1], th + 16), (0, 0, 0), -1)
    cv2.putText(img, text, (8, th + 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def encode(gray: np.ndarray, codes: list[Code], guidance: str | None = None, view=None) -> bytes:
    ok, buf = cv2.imencode(".jpg", annotate(gray, codes, guidance, view), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
