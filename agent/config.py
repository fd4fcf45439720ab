"""The station's one TOML config file: load, validate, and say exactly what is wrong.

Every section is a dataclass; its fields are the contract (names, types, defaults). Unknown
keys are errors so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import math
import os
import re
import tempfile
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from agent import clock


def _f(default: Any, *, choices: tuple | None = None, min: float | None = None,
       max: float | None = None, doc: str = "") -> Any:
    return field(default=default, metadata={"choices": choices, "min": min, "max": max, "doc": doc})


@dataclass
class StationConfig:
    id: str = _f("demo-station", doc="station id; also the MQTT client id")
    state_dir: str = _f("/var/lib/scanner-agent", doc="outbox and runtime state (systemd StateDirectory=); "
                                                      "relative paths are from the working directory")
    timezone: str = _f("Asia/Ho_Chi_Minh", doc="IANA time zone of every timestamp sent (read_at keeps this "
                                               "offset whatever the system zone) and of the station's day "
                                               "(card validity, ages, repeat_today)")
    facility_codes: list[str] = _f((), doc="this hospital's facility codes ('79-024' or '79024'): a BHYT "
                                           "card registered elsewhere gets the other_facility flag; empty: never")


@dataclass
class CameraConfig:
    source: str = _f("picamera2", choices=("picamera2", "v4l2", "replay"),
                     doc="replay is for the demo and tests: chosen explicitly, never by default")
    path: str = _f("", doc="replay: folder of images (sorted by name) or a video file; empty = bundled demo")
    device: int = _f(0, min=0, doc="v4l2: /dev/videoN")
    fps: float = _f(30.0, min=0.1, max=240)
    loop: bool = _f(False)
    width: int = _f(1280, min=160, max=4608)
    height: int = _f(720, min=120, max=3496)
    metering: str = _f("centre", choices=("centre", "spot", "matrix"), doc="picamera2 auto-exposure metering")
    exposure_us: int = _f(0, min=0, max=1_000_000, doc="picamera2 manual exposure; 0 = auto")
    analogue_gain: float = _f(0.0, min=0, max=16, doc="with exposure_us; 0 = 1.0")
    flicker_hz: int = _f(50, choices=(0, 50, 60), doc="mains frequency for anti-flicker; 0 = off")
    autofocus: str = _f("macro", choices=("macro", "off"), doc="Camera Module 3 continuous AF, macro range")
    scaler_crop: str = _f("", doc="picamera2 ScalerCrop 'x,y,w,h' in sensor pixels; empty = full")
    control: str = _f("auto", choices=("auto", "fixed"),
                      doc="'auto': crops onto and exposes for the located code (picamera2: ScalerCrop and "
                          "exposure; v4l2: a software crop and V4L2 exposure); 'fixed': one view")


@dataclass
class CheckinConfig:
    cooldown_s: float = _f(10.0, min=0, max=3600, doc="the same card shown again less than this after it was "
                                                      "last seen (not after its check-in) is 'already read'")
    try_again_s: float = _f(2.0, min=0.5, max=30, doc="a code seen but unreadable this long: 'try again'")
    idle_after_s: float = _f(3.0, min=0.5, max=600, doc="no change in the scene this long: idle")
    idle_fps: float = _f(5.0, min=0.5, max=30, doc="decode rate while idle")
    priority_groups: list[str] = _f(("CC", "CK", "TE"), doc="BHYT group codes that give priority (Law "
                                    "15/2023/QH15 art. 3(2)): TE priority_child, the others priority_merit")


@dataclass
class FeedbackConfig:
    backend: str = _f("gpio", choices=("gpio", "console", "none"), doc="console: the demo and tests")
    green_pin: int = _f(17, min=0, max=27)
    red_pin: int = _f(27, min=0, max=27)
    amber_pin: int = _f(-1, min=-1, max=27, doc="-1: no amber LED")
    buzzer_pin: int = _f(22, min=-1, max=27, doc="-1: no buzzer")
    buzzer: str = _f("active", choices=("active", "tonal"), doc="active buzzer (on/off) or passive (PWM tones)")
    voice: bool = _f(False, doc="speak a short Vietnamese prompt per signal through ALSA (aplay)")
    voice_dir: str = _f("/etc/scanner-agent/prompts", doc="folder of the prompts, SIGNAL.wav and "
                                                          "try_again-REASON.wav (the installer makes them)")
    voice_volume: int = _f(80, min=0, max=100, doc="percent of the recordings' level")
    voice_device: str = _f("default", doc="ALSA device (aplay -D), e.g. 'default', 'plughw:1,0'")
    voice_repeat_s: float = _f(5.0, min=0, max=600, doc="the same prompt at most once in this many seconds")


@dataclass
class OutboxConfig:
    retention_s: float = _f(3600.0, min=0, doc="delivered check-ins are deleted after this")
    max_events: int = _f(50_000, min=1)
    min_free_mb: int = _f(100, min=0)


@dataclass
class MqttConfig:
    host: str = _f("localhost")
    port: int = _f(8883, min=1, max=65535)
    topic_prefix: str = _f("hospital/checkin")
    allow_insecure: bool = _f(False, doc="allow a broker without TLS (demo and tests only)")
    tls: bool = _f(True)
    ca_file: str = _f("")
    cert_file: str = _f("")
    key_file: str = _f("")
    username: str = _f("")
    password: str = _f("")
    keepalive_s: int = _f(30, min=5, max=3600)
    require_subscriber: bool = _f(False, doc="count a check-in delivered only when a consumer was subscribed "
                                             "(MQTT 5 'No matching subscribers' keeps it queued)")
    health_interval_s: float = _f(60.0, min=1)
    delivered_on: str = _f("broker", choices=("broker", "receipt"),
                           doc="receipt: a check-in counts as delivered only when the hospital's consumer "
                               "confirms it on the receipt topic (or answers with a verdict)")
    receipt_timeout_s: float = _f(60.0, min=1, max=86400, doc="receipt mode: send again after this long "
                                                               "without a receipt (doubling while none come)")
    receipt_window: int = _f(256, min=1, max=10000, doc="receipt mode: check-ins sent and awaiting a receipt, "
                                                        "at most")
    verdict_max_age_s: float = _f(120.0, min=1, doc="a verdict arriving later than this after the read is "
                                                     "logged, reported as ignored and not shown")


@dataclass
class KeyboardOutputConfig:
    enabled: bool = _f(False, doc="type each check-in on the counter PC as a USB keyboard (USB gadget)")
    device: str = _f("/dev/hidg0")
    template_bhyt: str = _f("{raw}{enter}", doc="what is typed for a BHYT card; {raw} is the QR text, control characters removed")
    template_cccd: str = _f("{id_number}{enter}", doc="what is typed for a CCCD")
    prefix: str = _f("")
    suffix: str = _f("")
    key_delay_ms: float = _f(0.0, min=0, max=200, doc="pause after each key, for slow host software")
    layout: str = _f("us", choices=("us",))
    mode: str = _f("keys", choices=("keys", "alt_numpad"),
                   doc="alt_numpad: each character as Alt + its code on the keypad (Windows), which "
                       "Vietnamese input methods do not rewrite")
    timeout_s: float = _f(5.0, min=0.1, max=120, doc="no host reading this long: the line is dropped")


@dataclass
class SerialOutputConfig:
    enabled: bool = _f(False, doc="send each check-in as a line on a serial port (USB CDC gadget or adapter)")
    device: str = _f("/dev/ttyGS0")
    template_bhyt: str = _f("{raw}{enter}")
    template_cccd: str = _f("{raw}{enter}", doc="serial sends UTF-8 exactly: the whole CCCD text is fine")
    prefix: str = _f("")
    suffix: str = _f("")
    baud: int = _f(115200, min=1200, max=4_000_000, doc="for a USB-serial adapter; the gadget ignores it")
    timeout_s: float = _f(5.0, min=0.1, max=120)


#: the DG13 fields (the CCCD chip's Vietnamese data group) a check-in may carry, by the names the
#: chip reader gives them (agent.chip.lds; the simulated card's fields, agent.sim.chip)
DG13_FIELDS = ("id_number", "name", "birth_date", "sex", "nationality", "ethnicity", "religion",
               "home_town", "residence", "marks", "issued", "expiry", "parents", "spouse", "old_id")


@dataclass
class ChipConfig:
    reader: str = _f("none", choices=("pcsc", "pn532", "none"),
                     doc="the NFC reader for the CCCD's chip: a PC/SC reader (pcscd), a PN532 board, or none")
    device: str = _f("", doc="pcsc: the reader's name as pcscd lists it, or a part of it (empty: the first "
                             "reader); pn532: uart:/dev/serial0@115200, /dev/ttyUSB0 or i2c:1 (empty: /dev/serial0)")
    timeout_s: float = _f(5.0, min=0.5, max=60, doc="the longest one chip read may take, every access "
                                                     "attempt included")
    csca_dir: str = _f("", doc="folder of the issuing country's CSCA certificates; empty: the chip's data "
                               "is checked against its own signer only ('signature', not 'chain')")
    read_face: bool = _f(False, doc="also read DG2, the face image (about 15-20 KB: slower)")
    dg13_fields: list[str] = _f(("id_number", "name", "birth_date"),
                                doc="the DG13 fields the check-in carries (the least personal data by default)")


@dataclass
class LoggingConfig:
    level: str = _f("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass
class Config:
    station: StationConfig = field(default_factory=StationConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    checkin: CheckinConfig = field(default_factory=CheckinConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    #: None when the section is absent: run without a broker, check-ins stay queued.
    mqtt: MqttConfig | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: [output.keyboard] and [output.serial]: like a USB scanner, beside MQTT (off by default)
    keyboard: KeyboardOutputConfig = field(default_factory=KeyboardOutputConfig)
    serial: SerialOutputConfig = field(default_factory=SerialOutputConfig)
    #: [chip]: the CCCD chip reader (issue 33), off by default
    chip: ChipConfig = field(default_factory=ChipConfig)
    path: Path | None = None


SECTIONS: dict[str, type] = {"station": StationConfig, "camera": CameraConfig, "checkin": CheckinConfig,
            "feedback": FeedbackConfig, "outbox": OutboxConfig, "mqtt": MqttConfig,
            "logging": LoggingConfig, "output.keyboard": KeyboardOutputConfig,
            "output.serial": SerialOutputConfig, "chip": ChipConfig}
#: the Config attribute of each section
ATTRS = {"output.keyboard": "keyboard", "output.serial": "serial"}


class ConfigError(Exception):
    """Everything wrong with a config file, one line each, with line number and key."""

    def __init__(self, path: Path | str, errors: list[str]):
        self.path, self.errors = Path(path), errors
        super().__init__("\n".join(f"{path}:{e}" for e in errors))


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Map `section` and `section.key` to the line they are on (tomllib does not keep positions)."""
    lines: dict[str, int] = {}
    section = ""
    for n, line in enumerate(text.splitlines(), 1):
        if m := _HEADER.match(line):
            section = m.group(1).replace('"', "").replace("'", "").replace(" ", "")
            lines.setdefault(section, n)
        elif m := _KEY.match(line):
            key = m.group(1).strip("\"'")
            lines.setdefault(f"{section}.{key}" if section else key, n)
    return lines


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, type]:
    """Each field's value type, from the real annotations (`str | None` means a str when given)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        if typing.get_origin(hint) is list:
            out[name] = list
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if args else hint
    return out


WANTED = {str: "text", int: "a whole number", float: "a number", bool: "true or false",
          list: "a list of texts"}
MAX_LIST = 64


def _check_list(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= 64 for v in value):
        return None, f"must be a list of texts, got {value!r}"[:200]
    if len(value) > MAX_LIST:
        return None, f"must have at most {MAX_LIST} entries, got {len(value)}"
    return tuple(value), None


def _check_value(value: Any, f: dataclasses.Field, want: type) -> tuple[Any, str | None]:
    if want is list:
        return _check_list(value)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is float and isinstance(value, float) and not math.isfinite(value):
        return None, f"must be a finite number, got {value!r}"
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        return None, f"must be {WANTED.get(want, want.__name__)}, got {value!r}"
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        return None, f"must be one of {', '.join(meta['choices'])}, got {value!r}"
    if meta.get("min") is not None and value < meta["min"]:
        return None, f"must be >= {meta['min']}, got {value!r}"
    if meta.get("max") is not None and value > meta["max"]:
        return None, f"must be <= {meta['max']}, got {value!r}"
    return value, None


#: a check of a parsed Config by a module that uses it: its problems as (config key, message)
Check = Callable[["Config"], "list[tuple[str, str]]"]


def parse_config(text: str, path: Path | str = "<config>", *, station: bool = True,
                 checks: Sequence[Check] = ()) -> Config:
    """Validate TOML text into a Config; raises ConfigError listing every problem. `station`
    False: a config for a tool that only reads the broker (fleet): state_dir is not checked.
    `checks`: what the modules using the config check of it (the outputs' templates: see
    agent.outputs.checks), run here so their problems are listed with the rest, with line numbers;
    config itself imports none of them (they stand later in the data flow)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"TOML syntax: {exc}"]) from None
    where = _key_lines(text)
    errors: list[str] = []
    cfg = Config(path=Path(path))
    items = []
    for name, value in data.items():
        if name == "output" and isinstance(value, dict):   # [output.keyboard], [output.serial]
            for sub, subvalue in value.items():
                items.append((f"output.{sub}", subvalue))
        else:
            items.append((name, value))
    for name, value in items:
        line = where.get(name, 0)
        if name not in SECTIONS:
            errors.append(f"{line}: unknown section [{name}] (known: {', '.join(SECTIONS)})")
            continue
        if not isinstance(value, dict):
            errors.append(f"{line}: {name} must be a [section]")
            continue
        cls = SECTIONS[name]
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, raw in value.items():
            kline = where.get(f"{name}.{key}", line)
            if key not in known:
                errors.append(f"{kline}: unknown key {name}.{key} (known: {', '.join(known)})")
                continue
            checked, err = _check_value(raw, known[key], _field_types(cls)[key])
            if err:
                errors.append(f"{kline}: {name}.{key} {err}")
            else:
                kwargs[key] = checked
        setattr(cfg, ATTRS.get(name, name), cls(**kwargs))
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", cfg.station.id):
        errors.append(f"{where.get('station.id', 0)}: station.id may use 1-64 letters, digits, '_', '.', '-' "
                      f"(it is the MQTT client id and part of every topic), got {cfg.station.id!r}")
    try:
        clock.zone(cfg.station.timezone)
    except ValueError as exc:
        errors.append(f"{where.get('station.timezone', 0)}: station.timezone: {exc}")
    if cfg.mqtt is not None:
        m = cfg.mqtt
        if problem := topic_prefix_problem(m.topic_prefix):
            errors.append(f"{where.get('mqtt.topic_prefix', 0)}: mqtt.topic_prefix {problem}")
        if not m.host or any(c.isspace() or ord(c) < 32 for c in m.host):
            errors.append(f"{where.get('mqtt.host', 0)}: mqtt.host must be a host name or address")
        if not m.tls and not m.allow_insecure:
            errors.append(f"{where.get('mqtt.tls', 0)}: mqtt.tls = false sends patients' data in clear: "
                          "set tls = true (production) or allow_insecure = true (a test broker only)")
        if m.key_file and not m.cert_file:
            errors.append(f"{where.get('mqtt.key_file', 0)}: mqtt.key_file is set without mqtt.cert_file")
        if m.tls:
            for key in ("ca_file", "cert_file", "key_file"):
                if problem := _file_problem(getattr(m, key)):
                    errors.append(f"{where.get(f'mqtt.{key}', 0)}: mqtt.{key} {problem}")
    if cfg.camera.scaler_crop and not re.fullmatch(r"[0-9]+,[0-9]+,[0-9]+,[0-9]+", cfg.camera.scaler_crop):
        errors.append(f"{where.get('camera.scaler_crop', 0)}: camera.scaler_crop must be 'x,y,w,h'")
    if cfg.camera.source == "replay" and cfg.camera.path and not Path(cfg.camera.path).exists():
        errors.append(f"{where.get('camera.path', 0)}: camera.path {cfg.camera.path!r} does not exist")
    if problem := demo_feed_problem(cfg):
        errors.append(f"{where.get('camera.source', where.get('camera', 0))}: {problem}")
    for check in (*checks, _counter_fact_problems, _chip_problems):
        errors += [f"{where.get(key, 0)}: {message}" for key, message in check(cfg)]
    pins: dict[int, str] = {}
    for key in ("green_pin", "red_pin", "amber_pin", "buzzer_pin"):
        pin = getattr(cfg.feedback, key)
        if pin >= 0 and pin in pins:
            errors.append(f"{where.get(f'feedback.{key}', 0)}: feedback.{key} = {pin} is already "
                          f"feedback.{pins[pin]}: each LED and the buzzer needs a pin of its own")
        pins.setdefault(pin, key)
    if station and (problem := dir_problem(cfg.station.state_dir)):
        errors.append(f"{where.get('station.state_dir', 0)}: station.state_dir {problem}")
    if errors:
        raise ConfigError(path, errors)
    return cfg


def demo_feed_problem(cfg: Config) -> str | None:
    """Why this config would send the bundled demo patients to a hospital broker, or None: replay
    with no camera.path replays the demo frames, and [mqtt] would publish them as real check-ins."""
    if cfg.mqtt is None or cfg.camera.source != "replay" or cfg.camera.path:
        return None
    return ("camera.source = \"replay\" without camera.path replays the bundled demo patients, and [mqtt] "
            "would send them to the hospital as real check-ins: set [camera] source = \"picamera2\" (or "
            "\"v4l2\"), or name the frames to replay on purpose in camera.path")


_FACILITY = re.compile(r"^\s*([0-9]{2})\s*[-\u2010-\u2015\u2212]?\s*([0-9]{3})\s*$")


def facility_code(text: str) -> str | None:
    """A facility code in the `79-024`, `79 - 024` or `79024` form as `79024`; None when it is not one.
    Here, not in agent.cards, because the config checks the form IT writes them in (and config
    imports no stage); agent.cards.flags compares cards with them."""
    m = _FACILITY.match(text) if isinstance(text, str) else None
    return m.group(1) + m.group(2) if m else None


def _counter_fact_problems(cfg: Config) -> list[tuple[str, str]]:
    """Facility codes and group codes that could never match a card, as (config key, message)."""
    out = []
    for code in cfg.station.facility_codes:
        if facility_code(code) is None:
            out.append(("station.facility_codes", f"station.facility_codes: {code!r} is not a facility code "
                                                  "('79-024' or '79024': 2-digit province, 3-digit facility)"))
    for group in cfg.checkin.priority_groups:
        if not re.fullmatch(r"[A-Za-z]{2}", group):
            out.append(("checkin.priority_groups", f"checkin.priority_groups: {group!r} is not a BHYT group "
                                                   "code (two letters, e.g. 'CC')"))
    return out


def _chip_problems(cfg: Config) -> list[tuple[str, str]]:
    """[chip] values that could never work, as (config key, message)."""
    out = []
    seen: set[str] = set()
    for name in cfg.chip.dg13_fields:
        if name not in DG13_FIELDS:
            out.append(("chip.dg13_fields", f"chip.dg13_fields: {name!r} is not a DG13 field (known: "
                                            f"{', '.join(DG13_FIELDS)})"))
        elif name in seen:
            out.append(("chip.dg13_fields", f"chip.dg13_fields: {name!r} is listed twice"))
        seen.add(name)
    if cfg.chip.csca_dir and not Path(cfg.chip.csca_dir).is_dir():
        out.append(("chip.csca_dir", f"chip.csca_dir {cfg.chip.csca_dir!r} is not a folder (empty: no CSCA, "
                                     "the chip's signature is still checked)"))
    return out


def topic_prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start an MQTT topic name we publish to, or None (MQTT 5, 4.7)."""
    if not prefix:
        return "must not be empty"
    if any(ord(c) < 32 or ord(c) == 127 or c in "+#" for c in prefix):
        return "must not contain '+', '#', NUL, newlines or other control characters"
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return "must not start or end with '/' or contain an empty level ('//')"
    if prefix.startswith("$"):
        return "must not start with '$' (reserved for the broker's own topics)"
    if len(prefix.encode("utf-8")) > 1024:
        return "is too long (at most 1024 bytes)"
    return None


def _file_problem(name: str) -> str | None:
    """Why a file named in the config cannot be read, or None (empty = not used)."""
    if not name:
        return None
    p = Path(name)
    if not p.exists():
        return f"{name!r} does not exist"
    if not p.is_file():
        return f"{name!r} is not a file"
    if not os.access(p, os.R_OK):
        return f"{name!r} is not readable by this user"
    return None


def dir_problem(name: str) -> str | None:
    """Why the directory `name` cannot be used or created by this user, or None. Tried, not
    guessed from mode bits (root passes every access() check, yet nothing can be made under /proc
    or on a read-only mount): a temporary folder is made in it, or in its nearest existing
    ancestor, and removed at once."""
    if not name:
        return "must not be empty"
    p = Path(name)
    if p.exists():
        if not p.is_dir():
            return f"{name!r} exists and is not a directory"
        if not os.access(p, os.W_OK | os.X_OK) or not _can_make_in(p):
            return f"{name!r} is not writable by this user"
        return None
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or not _can_make_in(parent):
        return f"{name!r} does not exist and cannot be created (nothing can be made in {parent} by this user)"
    return None


def _can_make_in(folder: Path) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".scanner-agent-check-", dir=folder))
        return True
    except OSError as exc:
        # a full disk is a runtime fault, not a config error: `status` and `doctor` must say
        # "disk full", not "fix the config" (and exit 2 from `run` is never restarted by systemd)
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def load_config(path: Path | str, *, station: bool = True, checks: Sequence[Check] = ()) -> Config:
    """Read and validate a config file; unreadable files are a ConfigError too, never a traceback."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, [f"0: cannot read: {exc.strerror or exc}"]) from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a byte-order mark, as Windows editors write: harmless, so accepted
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(path, [f"{line}: not UTF-8 text"]) from None
    return parse_config(text, path, station=station, checks=checks)
