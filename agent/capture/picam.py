"""The Raspberry Pi camera through picamera2 (from the OS package python3-picamera2).

Configured for an emissive phone screen a hand's length away: the decoder reads the Y plane of
a `lores` YUV420 stream; exposure is metered on the centre (where the phone is) or set by hand,
not on the bright room; anti-flicker for 50 Hz mains lighting; continuous autofocus in the
macro range on Camera Module 3.
"""

from __future__ import annotations

from typing import Any, Callable

from agent.capture.source import Frame, SourceError, now
from agent.config import CameraConfig

# libcamera control enum values (libcamera.controls), as plain ints so this module imports
# without libcamera.
METERING = {"centre": 0, "spot": 1, "matrix": 2}
AF_MODE_CONTINUOUS = 2
AF_RANGE_MACRO = 1
FLICKER_MANUAL = 1


def _default_factory() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise SourceError("picamera2 is not installed (on Raspberry Pi OS: apt install python3-picamera2; "
                          "the venv needs --system-site-packages)") from exc
    try:
        return Picamera2()
    except (IndexError, RuntimeError) as exc:  # no camera connected / busy
        raise SourceError(f"no camera: {exc}") from exc


def camera_controls(cfg: CameraConfig, available: dict[str, Any]) -> dict[str, Any]:
    """The controls to set, limited to what this camera supports (`camera_controls`)."""
    controls: dict[str, Any] = {"FrameRate": float(cfg.fps)}
    if cfg.exposure_us > 0:
        controls.update(AeEnable=False, ExposureTime=int(cfg.exposure_us),
                        AnalogueGain=float(cfg.analogue_gain or 1.0))
    else:
        controls["AeMeteringMode"] = METERING[cfg.metering]
    if cfg.flicker_hz:
        # the light flickers at twice the mains frequency: period in microseconds
        controls.update(AeFlickerMode=FLICKER_MANUAL, AeFlickerPeriod=int(1_000_000 / (2 * cfg.flicker_hz)))
    if cfg.autofocus == "macro":
        controls.update(AfMode=AF_MODE_CONTINUOUS, AfRange=AF_RANGE_MACRO)
    if cfg.scaler_crop:
        controls["ScalerCrop"] = tuple(int(v) for v in cfg.scaler_crop.split(","))
    return {k: v for k, v in controls.items() if k in available}


class Picamera2Source:
    def __init__(self, cfg: CameraConfig, factory: Callable[[], Any] = _default_factory):
        self.cfg, self.factory = cfg, factory
        self.cam: Any = None
        self._i = 0
        self._size = (cfg.width, cfg.height)

    def open(self) -> None:
        cam = self.factory()
        try:
            size = (self.cfg.width - self.cfg.width % 2, self.cfg.height - self.cfg.height % 2)
            config = cam.create_video_configuration(main={"size": size},
                                                    lores={"size": size, "format": "YUV420"},
                                                    buffer_count=4, queue=False)
            cam.configure(config)
            cam.set_controls(camera_controls(self.cfg, dict(getattr(cam, "camera_controls", {}) or {})))
            cam.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises many kinds
            try:
                cam.close()
            finally:
                raise SourceError(f"camera start failed: {exc}") from exc
        self.cam, self._size = cam, size

    def read(self) -> Frame | None:
        if self.cam is None:
            raise SourceError("camera not open")
        try:
            yuv = self.cam.capture_array("lores")
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"capture failed: {exc}") from exc
        w, h = self._size
        self._i += 1
        return Frame(yuv[:h, :w], now(), self._i)  # Y plane of YUV420: the top h rows

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.stop()
                self.cam.close()
            finally:
                self.cam = None
