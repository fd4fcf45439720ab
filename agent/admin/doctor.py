"""`scanner-agent doctor`: check everything a station needs and say what to fix, one line each."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from agent import clock, paths, runstate
from agent.clock import clock_synced
from agent.config import Config, ConfigError
from agent.outputs.checks import load_config   # config with the outputs' checks (templates)
from agent.outbox import OutboxError, integrity
from agent.outbox.files import refuse_links
from agent.status_types import ChipStatus


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    #: what to do, for a FIX line (every one says it; shown after the detail)
    fix: str = ""
    #: worth knowing, not to fix for the station to work (the voice: the LEDs still say it all)
    warning: bool = False

    def line(self) -> str:
        text = self.detail if self.ok or not self.fix else f"{self.detail}: {self.fix}"
        return f"{'FIX ' if not self.ok else 'warn' if self.warning else 'ok  '} {self.name:10s} {text}"


def check_config(path: Path) -> tuple[Check, Config | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Check("config", False, f"{path}: " + "; ".join(exc.errors[:3]),
                     f"correct the lines named ('scanner-agent config check {path}' lists every problem)"), None
    return Check("config", True, str(path)), cfg


def check_state(cfg: Config) -> list[Check]:
    state = Path(cfg.station.state_dir)
    out = []
    if not state.exists():
        out.append(Check("state", False, f"{state} missing",
                         "start the service once (systemd creates it: StateDirectory=scanner-agent), or "
                         f"sudo install -d -o scanner-agent -g scanner-agent -m 700 {state}"))
        return out
    mode = stat.S_IMODE(state.stat().st_mode)
    writable = os.access(state, os.W_OK)
    fixes = ([] if writable else [f"run doctor as the service user (sudo -u scanner-agent), or give it the "
                                  f"folder: sudo chown scanner-agent: {state}"]) + \
        ([f"chmod 700 {state}"] if mode & 0o077 else [])
    out.append(Check("state", writable and not mode & 0o077,
                     f"{state} mode {mode:o}" + ("" if writable else ", not writable by this user")
                     + (", readable by others" if mode & 0o077 else ""), "; ".join(fixes)))
    db = paths.outbox(state)
    if db.exists():
        out.append(check_outbox(db))
        out += [Check("outbox", False, f"damaged outbox kept aside: {p}",
                      f"queue what can be read with 'scanner-agent queue import {p}' (add --delete-after to "
                      "remove it)")
                for p in paths.damaged_outboxes(db)]
    usage = shutil.disk_usage(state)
    free_mb = usage.free / 1e6
    out.append(Check("disk", free_mb >= cfg.outbox.min_free_mb,
                     f"{free_mb:.0f} MB free on the disk of {state} (minimum {cfg.outbox.min_free_mb} MB)",
                     "free space there (old logs: 'sudo journalctl --vacuum-size=50M'; 'sudo du -xsh /var/* | "
                     "sort -h' finds what is big; never delete the outbox), or lower [outbox] min_free_mb; "
                     "new check-ins are refused until then"))
    return out


def check_outbox(db: Path) -> Check:
    """Integrity (read-only: never moved or repaired here), mode, and -wal/-shm owned like the file.
    Never through a link (symbolic or hard): SQLite would read, and write the -shm of, its target."""
    try:
        refuse_links(db)
    except OutboxError as exc:
        return Check("outbox", False, str(exc))   # the message says what to do
    try:
        result = integrity(db)
    except OutboxError as exc:
        return Check("outbox", False, str(exc), "run doctor as the service user (sudo -u scanner-agent); "
                                                "if the station runs, 'scanner-agent status' shows its view")
    st = db.stat()
    problems, fixes = [], []
    if result != "ok":
        problems.append(f"integrity {result}")
        fixes.append("restart the service, which salvages it on start (sudo systemctl restart scanner-agent)")
    if stat.S_IMODE(st.st_mode) != 0o600:
        problems.append(f"mode {stat.S_IMODE(st.st_mode):o}")
        fixes.append(f"chmod 600 {db}")
    for side in paths.sidecars(db):
        try:
            sst = side.stat()
        except OSError:
            continue
        if sst.st_uid != st.st_uid:
            problems.append(f"{side} is owned by uid {sst.st_uid}, not the outbox's owner {st.st_uid} "
                            "(the service cannot open the outbox)")
            fixes.append(f"chown it back: sudo chown --reference={db} {side}")
    return Check("outbox", not problems, "; ".join(problems) or "integrity ok, mode 600", "; ".join(fixes))


def check_clock() -> Check:
    synced = clock_synced()
    return Check("clock", synced, "synchronised" if synced else
                 "not synchronised: check-ins carry clock_synced=false",
                 "check 'timedatectl' (NTP service active) and that the station reaches an NTP server")


def check_timezone(cfg: Config) -> Check:
    """The system's zone against `[station] timezone`. The station counts its days (card validity,
    ages, repeat_today) and stamps its messages in the configured zone whatever the system's; a
    different system zone only makes the journal and `status` times read differently, so a warning."""
    name = cfg.station.timezone
    system = clock.system_zone_name()
    if not clock.system_zone_differs(clock.zone(name)):
        return Check("timezone", True, name + ("" if system == name else f" (system zone {system}: the same time)"))
    return Check("timezone", True, f"system zone {system}, [station] timezone {name}: days (card validity, ages, "
                 f"repeat_today) and check-in times follow {name}, the journal and 'status' show {system} times "
                 f"(to align them: sudo timedatectl set-timezone {name})", warning=True)


def check_replay(cfg: Config, path: Path) -> Check | None:
    """A real station (one that sends to a broker, or the installed config) replaying images
    instead of reading its camera: every check-in it sends would be a recording, not a patient."""
    if cfg.camera.source != "replay" or (cfg.mqtt is None and path != paths.CONFIG):
        return None
    return Check("camera", False, f"source = \"replay\" ({cfg.camera.path or 'the bundled demo frames'}) on a "
                                  "station that sends check-ins to the hospital",
                 "set [camera] source = \"picamera2\" (or \"v4l2\" for a USB camera); replay is for demos and tests")


def check_camera(cfg: Config, daemon: runstate.DaemonStatus | None) -> Check:
    """The camera: the running daemon's (its status file: a camera whose control "auto" went back
    to the fixed view is a warning, the station reads as "fixed" does), else one frame read."""
    if daemon is not None:
        controls = daemon.camera.controls if daemon.camera is not None else None
        if controls is not None and (warning := controls.warning()) is not None:
            return Check("camera", True, f"in use by the running daemon; {warning} (the camera did not do what the "
                         "loop asked: set [camera] control = \"fixed\" to stop trying, or try another camera)",
                         warning=True)
        return Check("camera", True, "in use by the running daemon (see 'status')")
    from agent.capture import open_source
    src = open_source(cfg.camera, demo_frames=str(paths.DEMO_FRAMES))
    try:
        src.open()
        frame = src.read()
        src.close()
    except Exception as exc:  # noqa: BLE001
        return Check("camera", False, f"{cfg.camera.source}: {exc}", CAMERA_FIX)
    if frame is None:
        return Check("camera", False, f"{cfg.camera.source}: no frame", CAMERA_FIX)
    return Check("camera", True, f"{cfg.camera.source}: {frame.gray.shape[1]}x{frame.gray.shape[0]} frame, "
                                 f"mean level {frame.gray.mean():.0f}")


CAMERA_FIX = ("check the camera's cable and [camera] source / device (a Pi camera: 'rpicam-hello --list-cameras' "
              "must list it; a USB camera: /dev/videoN), and that no other program uses it")


def check_gpio(cfg: Config) -> Check:
    if cfg.feedback.backend != "gpio":
        return Check("gpio", True, f"feedback backend '{cfg.feedback.backend}': no pins used")
    chips = sorted(Path("/dev").glob("gpiochip*"))
    if not chips:
        return Check("gpio", False, "no /dev/gpiochip*: not a Raspberry Pi",
                     "on a Pi, check the OS image; elsewhere set [feedback] backend = \"console\"")
    denied = [str(c) for c in chips if not os.access(c, os.R_OK | os.W_OK)]
    if denied:
        return Check("gpio", False, f"no access to {', '.join(denied)}",
                     "add the user to group 'gpio' (sudo usermod -aG gpio scanner-agent; the installer does)")
    return Check("gpio", True, f"{len(chips)} GPIO chip(s) accessible")


def check_broker(cfg: Config) -> list[Check]:
    if cfg.mqtt is None:
        return [Check("broker", True, "no [mqtt] section: check-ins queue locally")]
    m = cfg.mqtt
    try:
        sock = socket.create_connection((m.host, m.port), timeout=5)
    except OSError as exc:
        return [Check("broker", False, f"{m.host}:{m.port} unreachable: {exc.strerror or exc}",
                      "check [mqtt] host and port, this station's network (ping the broker) and that the broker "
                      "runs (sudo systemctl status mosquitto on it)")]
    out = [Check("broker", True, f"{m.host}:{m.port} reachable")]
    if not m.tls:
        sock.close()
        out.append(Check("tls", m.allow_insecure, "off" + (" (allow_insecure = true: test brokers only)"
                                                           if m.allow_insecure else ""), "set [mqtt] tls = true"))
        return out
    try:
        ctx = ssl.create_default_context(cafile=m.ca_file or None)
        if m.cert_file:
            ctx.load_cert_chain(m.cert_file, m.key_file or None)
        with ctx.wrap_socket(sock, server_hostname=m.host) as tls:
            out.append(Check("tls", True, f"{tls.version()}, certificate verified"))
    except (ssl.SSLError, OSError) as exc:
        from agent.mqtt.session import describe

        sock.close()
        out.append(Check("tls", False, describe(exc, True, f"{m.host}:{m.port}"),
                         "check [mqtt] ca_file (the hospital CA, make-ca.sh's hospital-ca.crt), that [mqtt] host "
                         "is the name in the broker's certificate, and the port (TLS: 8883)"))
    return out


def check_session(cfg: Config, timeout: float = 10.0) -> list[Check]:
    """Log in as the station would (its credentials and TLS, client id `{station}-doctor`: never the
    station's own id, which would take the running station's session) and try what the station
    does: subscribe to its verdict (and receipt) topic and publish a health report, QoS 1, not
    retained (the retained one stays the station's). Names a refused login and ACL refusals: a
    refused publish always (MQTT 5 PUBACK), a refused subscription where the broker says so in
    its SUBACK (Mosquitto 2.0 grants it and then delivers nothing)."""
    import json
    import threading

    from agent.mqtt.messages import topics
    from agent.mqtt.session import connect_properties, describe, make_client

    m, station = cfg.mqtt, cfg.station.id
    clock.use_zone(cfg.station.timezone)
    t = topics(m.topic_prefix, station)
    wanted = ["verdict"] + (["receipt"] if m.delivered_on == "receipt" else [])
    got: dict[str, object] = {}
    connected, answered = threading.Event(), threading.Event()

    def on_connect(c, u, f, rc, p) -> None:
        got["connect"] = str(rc) if rc.is_failure else None
        connected.set()

    def note(key: str, value: object) -> None:
        got[key] = value
        if {"suback", "puback"} <= got.keys():
            answered.set()

    client = make_client(m, f"{station}-doctor")
    client.on_connect = on_connect
    client.on_subscribe = lambda c, u, mid, rcs, p: note("suback", [str(rc) for rc in rcs])
    client.on_publish = lambda c, u, mid, rc, p: note("puback", str(rc) if rc.is_failure else None)
    try:
        # MQTT 5 Maximum Packet Size, as the station advertises it: a retained verdict of any size
        # is the broker's to drop, never read into doctor's memory on the station's Pi
        client.connect(m.host, m.port, keepalive=10, clean_start=True, properties=connect_properties(0))
    except Exception as exc:  # noqa: BLE001 - said in one line
        return [Check("mqtt", False, f"cannot log in: {describe(exc, m.tls, f'{m.host}:{m.port}')}",
                      "check [mqtt] host, port and TLS settings against the broker's listener")]
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        if not connected.wait(timeout):
            return [Check("mqtt", False, f"no answer to the MQTT login within {timeout:.0f} s",
                          f"check that {m.host}:{m.port} is an MQTT broker's port (not a web server's)")]
        if got["connect"] is not None:
            return [Check("mqtt", False, f"the broker refused the login: {got['connect']}",
                          "check [mqtt] username/password (or the client certificate) and the broker's users "
                          "(examples/mosquitto/make-passwd.sh)")]
        client.subscribe([(t[name], 1) for name in wanted])
        client.publish(t["health"], json.dumps(_probe_health(cfg)), qos=1, retain=False)
        answered.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.loop_stop()
        client.disconnect()
    out = [Check("mqtt", True, f"logged in as {m.username or '(anonymous)'}")]
    refused = [f"subscribe {t[name]}: {rc}" for name, rc in zip(wanted, got.get("suback") or [])
               if not rc.startswith("Granted")]
    if "puback" not in got:
        refused.append(f"publish {t['health']}: no acknowledgement within {timeout:.0f} s")
    elif got["puback"] is not None:
        refused.append(f"publish {t['health']}: {got['puback']}")
    if "suback" not in got:
        refused.append("subscribe: no answer")
    out.append(Check("acl", not refused, "; ".join(refused) if refused else
                     f"publish and subscribe on {m.topic_prefix}/{station}/ allowed",
                     f"the broker's ACL must let this user publish to {m.topic_prefix}/{station}/# and read its "
                     "verdict/receipt topics (examples/mosquitto/acl, docs/integrating.md)"))
    return out


def _probe_health(cfg: Config) -> dict:
    """What doctor publishes: a health report (valid against health.json) from the outbox and the
    running daemon's status file, so a consumer reading it learns nothing false."""
    from agent.mqtt.messages import health_payload
    from agent.outbox import Outbox, OutboxStats

    stats = OutboxStats.unreadable("no outbox yet")
    db = paths.outbox(cfg.station.state_dir)
    if db.exists():
        try:
            box = Outbox(db, station=cfg.station.id, readonly=True)
            try:
                stats = box.stats()
            finally:
                box.close()
        except OutboxError as exc:
            stats = OutboxStats.unreadable(exc)
    running = runstate.read(paths.status_file(cfg.station.state_dir))
    controls = running.camera.controls if running is not None and running.camera is not None else None
    chip = running.workers.get("chip") if running is not None else None
    chip_reader = None
    if isinstance(chip, ChipStatus) and chip.reader in ("pcsc", "pn532"):
        chip_reader = {"reader": chip.reader, "ok": chip.fault is None and chip.problem is None,
                       "problem": chip.problem, "reads": dict(chip.reads)}
    return health_payload(cfg.station.id, stats, uptime_s=time.time() - running.started_at if running else 0.0,
                          delivered_on=cfg.mqtt.delivered_on, faults=list(running.faults) if running else [],
                          camera_fallback=controls.fallback if controls is not None else None,
                          chip_reader=chip_reader)


def check_outputs(cfg: Config) -> list[Check]:
    """The keyboard and serial outputs' devices: there and writable (not that a host reads them)."""
    out = []
    for name, oc in (("keyboard", cfg.keyboard), ("serial", cfg.serial)):
        if not oc.enabled:
            continue
        dev = Path(oc.device)
        if not dev.exists():
            gadget = ("sudo systemctl enable --now scanner-agent-usb-gadget (the package ships it disabled)"
                      if paths.PACKAGE_LIST.exists() else "sudo systemd/install.sh --usb-gadget")
            hint = (f"set up the USB gadget: {gadget} (see README)"
                    if oc.device in ("/dev/hidg0", "/dev/ttyGS0") else "check the cable and the device name")
            out.append(Check(name, False, f"{dev} missing", f"{hint}; or [output.{name}] enabled = false"))
        elif not os.access(dev, os.W_OK):
            out.append(Check(name, False, f"{dev} not writable by this user", "add it to the device's group"))
        else:
            out.append(Check(name, True, f"{dev} present"))
    return out


def check_chip(cfg: Config) -> Check | None:
    """The CCCD chip reader ([chip] reader): it opens and answers (no card needed), and whether a
    CSCA trust store is there; None when no reader is configured."""
    from agent.chip.reader import reader_check

    if cfg.chip.reader == "none":
        return None
    ok, line = reader_check(cfg.chip)
    if not ok:
        return Check("chip", False, line, 'plug the reader in (pcsc: is pcscd running?), or [chip] reader = "none"; '
                     'without it every CCCD check-in is stored with chip "absent"')
    csca = Path(cfg.chip.csca_dir) if cfg.chip.csca_dir else None
    certs = len([p for p in csca.iterdir() if p.is_file()]) if csca is not None and csca.is_dir() else 0
    trust = (f"{certs} CSCA file(s) in {csca}" if certs else
             "no CSCA certificates ([chip] csca_dir): chips verify as 'signature' at best, never 'chain'")
    return Check("chip", True, f"{line}; {trust}", warning=not certs)


def check_voice(cfg: Config) -> Check:
    """The voice prompts: aplay, the device, every prompt file. A warning at worst: the LEDs
    still say everything."""
    from agent.feedback.audio import BadWav, probe, read_wav
    from agent.feedback.voice import PROMPTS

    fb = cfg.feedback
    if not fb.voice:
        return Check("voice", True, "off ([feedback] voice = false)")
    folder = Path(fb.voice_dir)
    missing = [n for n in PROMPTS if not paths.prompt(folder, n).is_file()]
    if missing:
        return Check("voice", True, f"{len(missing)} prompt file(s) missing in {folder} ({', '.join(missing[:3])}"
                     f"{', ...' if len(missing) > 3 else ''}): make them with 'sudo apt install espeak-ng && sudo "
                     f"/opt/scanner-agent/venv/bin/python -m agent.feedback.prompts {folder}' (existing files "
                     "are kept), or put recordings there", warning=True)
    damaged = []
    for name in PROMPTS:
        try:
            read_wav(paths.prompt(folder, name))
        except (BadWav, OSError) as exc:
            damaged.append(str(exc) if isinstance(exc, BadWav) else f"{paths.prompt(folder, name)}: {exc.strerror}")
    if damaged:
        return Check("voice", True, f"{len(damaged)} prompt file(s) cannot be played: {'; '.join(damaged[:2])}"
                     f"{'; ...' if len(damaged) > 2 else ''} (replace them with a recording, or delete them and "
                     "make the default ones as the installer does)", warning=True)
    if problem := probe(fb.voice_device):
        return Check("voice", True, f"no sound: {problem} (set [feedback] voice_device; 'aplay -L' lists "
                                    "them)", warning=True)
    return Check("voice", True, f"device {fb.voice_device}, prompts in {folder}")


def _units() -> list[Path]:
    """The service's unit files systemd can see, the one it uses first (paths.UNIT_DIRS); a folder
    that is another's alias (/lib and /usr/lib on a merged /usr) is listed once."""
    found, seen = [], set()
    for folder in paths.UNIT_DIRS:
        unit = folder / paths.UNIT.name
        try:
            real = folder.resolve()
        except OSError:
            continue
        if real not in seen and os.path.lexists(unit):
            seen.add(real)
            found.append(unit)
    return found


def _masked(unit: Path) -> bool:
    """systemd's masking: a link to /dev/null (`systemctl mask`, and what removing the package leaves)
    or an empty file."""
    try:
        return unit.resolve() == Path("/dev/null") or unit.stat().st_size == 0
    except OSError:
        return False


def check_unit() -> Check:
    """The service unit wherever systemd finds it: install.sh's in /etc/systemd/system, the Debian
    package's in /lib/systemd/system. The fix never tells a package install to run install.sh (its
    unit in /etc would hide the package's from every upgrade)."""
    packaged = paths.PACKAGE_LIST.exists()
    units = _units()
    if not units:
        fix = ("reinstall the package: sudo apt install --reinstall scanner-agent" if packaged else
               "install the Debian package (README, 'Installing on a Raspberry Pi'), or from a source tree: "
               "sudo systemd/install.sh")
        return Check("service", False, f"no {paths.UNIT.name} in systemd's unit folders", fix)
    used = units[0]
    if _masked(used):
        return Check("service", False, f"{used} is masked: the service cannot start",
                     "sudo systemctl unmask scanner-agent" + (" (after removing the package: reinstall it)"
                                                              if not packaged else ""))
    if len(units) > 1 and used.parent == paths.UNIT.parent:
        return Check("service", True, f"{used} (systemd/install.sh's) hides {units[1]} (the package's): upgrades "
                     f"of the package do not reach the service; remove it: sudo rm {used} && sudo systemctl "
                     "daemon-reload (local changes go in 'sudo systemctl edit scanner-agent')", warning=True)
    return Check("service", True, str(used))


def run(path: Path) -> list[Check]:
    checks = []
    first, cfg = check_config(path)
    checks.append(first)
    if cfg is None:
        return checks
    daemon = runstate.read(paths.status_file(cfg.station.state_dir))
    checks += check_state(cfg)
    checks.append(check_clock())
    checks.append(check_timezone(cfg))
    checks.append(check_replay(cfg, path) or check_camera(cfg, daemon))
    checks.append(check_gpio(cfg))
    broker = check_broker(cfg)
    checks += broker
    if cfg.mqtt is not None and all(c.ok for c in broker):
        checks += check_session(cfg)
    checks += check_outputs(cfg)
    if (chip := check_chip(cfg)) is not None:
        checks.append(chip)
    checks.append(check_voice(cfg))
    checks.append(check_unit())
    return checks


def report(path: Path) -> int:
    """Print every check, one line each; 2 when the config cannot be read (nothing else is
    checked), 1 when something is to fix, else 0."""
    checks = run(path)
    for c in checks:
        print(c.line())
    if checks[0].name == "config" and not checks[0].ok:
        print("the config cannot be read: nothing else checked")
        return 2
    failed = [c for c in checks if not c.ok]
    print(f"{len(failed)} problem(s) to fix" if failed else "all checks passed")
    return 1 if failed else 0
