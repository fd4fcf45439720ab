"""Frames of a steered source (the virtual Pi camera, the stand-in webcam) through the product's
decoder and capture loop, as the station does: read, decode, steer from what was located."""

from __future__ import annotations

from collections.abc import Callable

from agent.checkin import Presenter
from agent.decode import FrameReader


def drive(src, epoch: Callable[[], float], seconds: float, stop_on_read: bool = False,
          presenter: Presenter | None = None):
    """Open `src`, run it for `seconds` of camera time (`epoch()`: the camera's start), close it.
    With a `presenter`, the codes it has handled are handed to the loop as the station does.
    Returns the source and [(t, frame, result)]."""
    src.open()
    reader = FrameReader()
    out = []
    try:
        while True:
            f = src.read()
            t = f.t - epoch()
            if t > seconds:
                break
            res = reader.read(f.gray, view=f.view)
            if presenter is None:
                src.steer(f, res, True)
            else:
                presenter.on_frame(f.t, res, view=f.view)
                src.steer(f, res, True, presenter.handled(res.codes))
            out.append((t, f, res))
            if stop_on_read and res.codes:
                break
    finally:
        src.close()
    return src, out
