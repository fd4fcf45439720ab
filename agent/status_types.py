"""The sections of the daemon's status (agent.runstate.DaemonStatus), typed where the rooms meet:
what a worker, the MQTT link, the camera, the station's counters and the outbox each report of
themselves.

In the base: runstate reads them and the rooms that fill them (worker, capture, outbox, outputs,
mqtt) build them, so they import none of those rooms. Each to_dict() writes the exact JSON (keys,
order) the status file and `scanner-agent status --json` have always had. Each from_dict() reads
a section of a file that is the daemon's but never trusted blindly: a damaged or older section
reads as defaults, never a traceback; keys it does not know are dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Self


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _number(value: Any) -> float | None:
    """A number as it was written (an int stays an int: the JSON stays byte-identical), else None."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _counts(value: Any) -> dict[str, int]:
    return {k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)} \
        if isinstance(value, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- workers ---------------------------------------------------------------------------------

@dataclass
class WorkerStatus:
    """Every supervised thread's own (agent.worker.Worker.status())."""
    alive: bool = False
    crashes: int = 0
    last_crash: str | None = None
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)   # a subclass's fields follow the worker's, as they always have

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """A worker's section; read as WorkerStatus, the kind of worker it is from is told by the
        fields only that kind has."""
        d = _dict(data)
        kind = (cls if cls is not WorkerStatus else MqttStatus if "broker" in d else WriterStatus if "device" in d
                else ChipStatus if "reader" in d else cls)
        return kind(**kind.fields_from(d))

    @staticmethod
    def fields_from(d: dict[str, Any]) -> dict[str, Any]:
        return {"alive": d.get("alive") is True, "crashes": _int(d.get("crashes")),
                "last_crash": _text(d.get("last_crash")), "fault": _text(d.get("fault"))}


@dataclass
class MqttStatus(WorkerStatus):
    """The MQTT link's (agent.mqtt.link.MqttLink.status()): the `mqtt` section, and its worker's."""
    connected: bool = False
    last_error: str | None = None
    failed_attempts: int = 0
    connected_since: float | None = None
    failed_total: int = 0
    broker: str = "?"
    #: "broker" (delivered on PUBACK) or "receipt" (on the hospital's receipt)
    delivered_on: str = "broker"
    awaiting_receipt: int = 0

    @staticmethod
    def fields_from(d: dict[str, Any]) -> dict[str, Any]:
        return {**WorkerStatus.fields_from(d), "connected": d.get("connected") is True,
                "last_error": _text(d.get("last_error")), "failed_attempts": _int(d.get("failed_attempts")),
                "connected_since": _number(d.get("connected_since")), "failed_total": _int(d.get("failed_total")),
                "broker": _text(d.get("broker")) or "?", "delivered_on": _text(d.get("delivered_on")) or "broker",
                "awaiting_receipt": _int(d.get("awaiting_receipt"))}


@dataclass
class WriterStatus(WorkerStatus):
    """An output's writer thread (agent.outputs.writer)."""
    device: str = ""
    sent: int = 0
    dropped: int = 0
    queued: int = 0
    device_fault: str | None = None

    @staticmethod
    def fields_from(d: dict[str, Any]) -> dict[str, Any]:
        return {**WorkerStatus.fields_from(d), "device": _text(d.get("device")) or "", "sent": _int(d.get("sent")),
                "dropped": _int(d.get("dropped")), "queued": _int(d.get("queued")),
                "device_fault": _text(d.get("device_fault"))}


@dataclass
class ChipStatus(WorkerStatus):
    """The CCCD chip reader's worker (agent.chip.counter): the reader, why it cannot be used, and
    the reads since the start by outcome (`verified`)."""
    reader: str = ""
    problem: str | None = None
    reads: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def fields_from(d: dict[str, Any]) -> dict[str, Any]:
        return {**WorkerStatus.fields_from(d), "reader": _text(d.get("reader")) or "",
                "problem": _text(d.get("problem")), "reads": _counts(d.get("reads"))}


# -- camera ----------------------------------------------------------------------------------

@dataclass
class ViewStatus:
    """The crop and exposure of the newest frame (agent.capture.view.View)."""
    crop: list[int]
    exposure_us: int = 0
    gain: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"crop": list(self.crop), "exposure_us": self.exposure_us, "gain": self.gain}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewStatus | None:
        crop = d.get("crop")
        if not (isinstance(crop, list) and len(crop) == 4 and all(_number(v) is not None for v in crop)):
            return None
        gain = _number(d.get("gain"))
        return cls(crop, _int(d.get("exposure_us")), 1.0 if gain is None else gain)


@dataclass
class ControlStatus:
    """How a camera that steers itself is steered (its source's control_status(): picam, v4l2)."""
    control: str                 # "fixed" or "auto"
    mode: str = ""               # the sensor or webcam mode in use
    state: str = "fixed"         # the loop's state (a webcam's refused exposure said here too)
    #: a webcam's exposure (manual, its own auto, refused); None: not a webcam's loop (not written)
    exposure_control: str | None = None
    #: why "auto" went back to the fixed view for good (the camera did not do what the loop asked:
    #: agent/capture/landing.py); None: it has not (not written)
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"control": self.control, "mode": self.mode, "state": self.state}
        if self.exposure_control is not None:
            out["exposure_control"] = self.exposure_control
        if self.fallback is not None:
            out["fallback"] = self.fallback
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ControlStatus | None:
        if (control := _text(d.get("control"))) is None:
            return None
        return cls(control, _text(d.get("mode")) or "", _text(d.get("state")) or "",
                   _text(d.get("exposure_control")), _text(d.get("fallback")))

    def warning(self) -> str | None:
        """The fallback as `status`, `doctor` and the health message say it: a warning, never a
        fault (the station reads as with control = "fixed")."""
        if self.fallback is None:
            return None
        return f"camera: control \"auto\" went back to the fixed view until the service restarts: {self.fallback}"


@dataclass
class CameraStatus:
    """The `camera` section: the source's name, the grabber's figures, then what the source says
    of its own crop, exposure and control when it steers itself."""
    source: str
    fault: str | None = None
    frames: int = 0
    finished: bool = False       # a replay without loop has ended
    view: ViewStatus | None = None
    controls: ControlStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "fault": self.fault, "frames": self.frames, "finished": self.finished,
                **(self.view.to_dict() if self.view else {}), **(self.controls.to_dict() if self.controls else {})}

    @classmethod
    def from_dict(cls, data: Any) -> CameraStatus | None:
        if not isinstance(data, dict) or (source := _text(data.get("source"))) is None:
            return None
        return cls(source, _text(data.get("fault")), _int(data.get("frames")), data.get("finished") is True,
                   ViewStatus.from_dict(data), ControlStatus.from_dict(data))


# -- the station's counters ------------------------------------------------------------------

@dataclass
class Counters:
    """What the station did since the daemon started (agent.station)."""
    frames: int = 0
    decoded: int = 0
    checkins: int = 0
    already_read: int = 0
    rejected: int = 0
    try_again: int = 0
    refused: int = 0             # check-ins the outbox could not store
    last_checkin_at: float | None = None
    by_verdict: dict[str, int] = field(default_factory=dict)
    #: why codes were not read: TRY_AGAIN reasons counted, and the last few ({"reason", "at"}, newest last)
    guidance: dict[str, int] = field(default_factory=dict)
    last_guidance: list[dict[str, Any]] = field(default_factory=list)
    by_flag: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Counters | None:
        if not isinstance(data, dict):
            return None
        last = data.get("last_guidance")
        return cls(**{k: _int(data.get(k)) for k in ("frames", "decoded", "checkins", "already_read", "rejected",
                                                      "try_again", "refused")},
                   last_checkin_at=_number(data.get("last_checkin_at")), by_verdict=_counts(data.get("by_verdict")),
                   guidance=_counts(data.get("guidance")),
                   last_guidance=[g for g in last if isinstance(g, dict)] if isinstance(last, list) else [],
                   by_flag=_counts(data.get("by_flag")))


# -- the outbox ------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutboxStats:
    """The outbox's figures, or (with `error`) why they are unknown (agent.outbox.store's
    summary() and stats(); the same figures in the status file, `status` and the health message)."""
    queue_depth: int | None
    oldest_undelivered_age_s: float | None
    last_checkin_at: float | None
    delivered_total: int = 0
    failed_total: int = 0
    #: the damaged file this outbox replaced since the daemon started (None: none)
    recovered_from: str | None = None
    #: the last salvage from a damaged file (kept in the outbox, so it survives restarts)
    recovery: dict[str, Any] | None = None
    #: damaged files kept aside that still need IT's import
    damaged_files: list[str] = field(default_factory=list)
    #: set when the outbox could not be read: the figures above are then unknown
    error: str | None = None
    #: of queue_depth, the check-ins set aside as undeliverable (the broker will not take them):
    #: no longer sent, kept until IT exports and removes them (`queue remove`)
    undeliverable: int = 0

    @classmethod
    def unreadable(cls, why: BaseException | str, *, queue_depth: int | None = None) -> OutboxStats:
        """The figures unknown, and why (the outbox cannot be read, or there is none yet)."""
        return cls(queue_depth=queue_depth, oldest_undelivered_age_s=None, last_checkin_at=None, error=str(why))

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"queue_depth": self.queue_depth, "oldest_undelivered_age_s": self.oldest_undelivered_age_s,
                    "last_checkin_at": self.last_checkin_at, "error": self.error}
        out = {"queue_depth": self.queue_depth, "oldest_undelivered_age_s": self.oldest_undelivered_age_s,
               "delivered_total": self.delivered_total, "failed_total": self.failed_total,
               "last_checkin_at": self.last_checkin_at, "recovered_from": self.recovered_from,
               "recovery": self.recovery, "damaged_files": list(self.damaged_files)}
        if self.undeliverable:   # only then: a status file written before it is written again byte for byte
            out["undeliverable"] = self.undeliverable
        return out

    @classmethod
    def from_dict(cls, data: Any) -> OutboxStats | None:
        """The status file's `outbox` section (either shape of to_dict()); None when damaged."""
        if not isinstance(data, dict):
            return None
        depth = data.get("queue_depth")
        depth = depth if _number(depth) is not None else None
        if isinstance(error := data.get("error"), str):
            return cls(depth, _number(data.get("oldest_undelivered_age_s")), _number(data.get("last_checkin_at")),
                       error=error)
        files, recovery = data.get("damaged_files"), data.get("recovery")
        return cls(depth, _number(data.get("oldest_undelivered_age_s")), _number(data.get("last_checkin_at")),
                   _int(data.get("delivered_total")), _int(data.get("failed_total")),
                   _text(data.get("recovered_from")), recovery if isinstance(recovery, dict) else None,
                   [f for f in files if isinstance(f, str)] if isinstance(files, list) else [],
                   undeliverable=_int(data.get("undeliverable")))
