"""`scanner-agent snapshot OUT.jpg`: the current camera frame with detected codes and
saturated (glare) areas drawn on it, to aim the camera and check focus from a laptop."""

from __future__ import annotations

from pathlib import Path

from agent import paths, runstate
from agent.admin.files import check_target, write_private
from agent.config import Config
from agent.control import request
from agent.decode.annotate import encode
from agent.decode import decode


def from_camera(cfg: Config) -> bytes:
    """With the daemon stopped: open the camera, let exposure settle a few frames, decode, annotate."""
    from agent.capture import open_source

    src = open_source(cfg.camera, demo_frames=str(paths.DEMO_FRAMES))
    src.open()
    try:
        frame = None
        for _ in range(1 if cfg.camera.source == "replay" else 10):
            frame = src.read() or frame
    finally:
        src.close()
    if frame is None:
        raise RuntimeError("the camera gave no frame")
    result = decode(frame.gray)
    return encode(frame.gray, result.codes, result.guidance, frame.view)


def take(cfg: Config, out: Path) -> str:
    """Write the snapshot (a fresh file, mode 0600, never into the state directory); returns where
    it came from."""
    check_target(out, Path(cfg.station.state_dir))  # refuse before opening the camera
    sock = paths.control_socket(cfg.station.state_dir)
    if runstate.read(paths.status_file(cfg.station.state_dir)) is not None and sock.exists():
        data, origin = request(sock, "snapshot"), "running daemon"
    else:
        data, origin = from_camera(cfg), f"camera ({cfg.camera.source}), daemon not running"
    write_private(out, lambda f: f.write(data), Path(cfg.station.state_dir))
    return origin
