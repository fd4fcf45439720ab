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
    """With the daemon stopped: open the camera, let exposure settle a few frames, decode, annotate.
    RuntimeError, said in one line by the command, when there is no usable camera."""
    from agent.capture import SourceError, open_source

    src = open_source(cfg.camera, demo_frames=str(paths.DEMO_FRAMES))
    try:
        src.open()
        try:
            frame = None
            for _ in range(1 if cfg.camera.source == "replay" else 10):
                frame = src.read() or frame
        finally:
            src.close()
    except SourceError as exc:   # no camera, cable out, another program holds it: a line, not a traceback
        raise RuntimeError(f"camera ({cfg.camera.source}): {exc} ('scanner-agent doctor' checks the camera)") from None
    if frame is None:
        raise RuntimeError(f"camera ({cfg.camera.source}): it gave no frame ('scanner-agent doctor' checks the camera)")
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
