"""capture: frame sources (picamera2, v4l2 webcam, replay) and a newest-frame-wins grabber."""

from agent.capture.source import Frame, FrameSource, SourceError
from agent.capture.factory import open_source
from agent.capture.grabber import Grabber

__all__ = ["Frame", "FrameSource", "SourceError", "open_source", "Grabber"]
