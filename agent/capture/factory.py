"""The frame source the config names: the one module that knows every source (each source
imports only agent/capture/source.py, so no import runs back here)."""

from __future__ import annotations

from agent.capture.source import FrameSource
from agent.config import CameraConfig


def open_source(cfg: CameraConfig, *, demo_frames: str | None = None) -> FrameSource:
    """The source the config names (not yet opened)."""
    if cfg.source == "replay":
        from agent.capture.replay import ReplaySource
        return ReplaySource(cfg.path or demo_frames or "", fps=cfg.fps, loop=cfg.loop)
    if cfg.source == "v4l2":
        from agent.capture.v4l2 import V4l2Source
        return V4l2Source(cfg)
    from agent.capture.picam import Picamera2Source
    return Picamera2Source(cfg)
