"""`scanner-agent` command line. Exit status: 0 done, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path

from agent import __version__, paths
from agent.cards import read_card
from agent.config import DEFAULT_PATH, ConfigError, load_config


MAX_LIMIT = 100_000


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}, got {text}")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def _print_read(read, as_json: bool, flags: list[str] | None = None) -> None:
    if as_json:
        print(json.dumps({**read.to_dict(), **({"flags": flags} if flags is not None else {})},
                         ensure_ascii=False))
        return
    print(f"{read.kind}: {read.verdict}" + (f" [{', '.join(flags)}]" if flags else ""))
    for key, value in read.card.items():
        if value not in (None, [], ""):
            print(f"  {key}: {value}")
    for p in read.problems:
        print(f"  ! {p.code}: {p.message}")


def cmd_parse(args: argparse.Namespace) -> int:
    if args.text == "-":
        if sys.stdin is None or sys.stdin.closed:
            print("parse -: there is no standard input to read", file=sys.stderr)
            return 2
        try:
            data: str | bytes = sys.stdin.buffer.read().rstrip(b"\r\n")
        except OSError as exc:
            print(f"parse -: cannot read standard input: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        data = args.text
    from agent.cards.flags import LAW_PRIORITY_GROUPS, card_flags

    # only the facility codes and priority groups are read: parse never touches the state directory
    cfg = load_config(args.config, station=False) if args.config else None
    today = args.today or date.today()
    read = read_card(data, today)
    flags = card_flags(read, today, cfg.station.facility_codes if cfg else (),
                       cfg.checkin.priority_groups if cfg else LAW_PRIORITY_GROUPS)
    _print_read(read, args.json, flags)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path or args.config or DEFAULT_PATH)
    try:
        load_config(path)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"{exc.path}:{err}", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def load_gray(path: str):
    """An image file as grayscale, ignoring EXIF rotation (corners stay in file pixels)."""
    import cv2

    return cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)


def cmd_decode(args: argparse.Namespace) -> int:
    from agent.decode import STRATEGIES, decode, decode_with

    if args.strategy not in ("cascade", "baseline", *STRATEGIES):
        print(f"unknown strategy {args.strategy!r}; one of: cascade, baseline, {', '.join(STRATEGIES)}",
              file=sys.stderr)
        return 2
    status = 0
    for path in args.images:
        gray = load_gray(path)
        if gray is None:
            print(f"{path}: cannot read as an image", file=sys.stderr)
            status = 1
            continue
        result = decode(gray) if args.strategy == "cascade" else decode_with(gray, args.strategy)
        if args.json:
            codes = [{"text": c.text, "corners": [list(p) for p in c.corners]} for c in result.codes]
            print(json.dumps({"file": path, "codes": codes, "ms": round(result.ms, 3)}, ensure_ascii=False),
                  flush=True)
        else:
            shown = "; ".join(f"{c.text[:60]!r} via {c.strategy}" for c in result.codes) or "no code"
            print(f"{path}: {shown} ({result.ms:.1f} ms)")
    return status


def setup_logging(level: str) -> None:
    # under systemd the journal adds its own timestamps
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stderr, force=True)


def demo_config():
    """The demo, chosen explicitly (the code's defaults are a real station's): bundled frames
    replayed, console signals, ./state, no broker."""
    from agent.config import CameraConfig, Config, FeedbackConfig, StationConfig

    return Config(station=StationConfig(state_dir="state"),
                  camera=CameraConfig(source="replay", fps=4.0),  # slow enough to watch each presentation
                  feedback=FeedbackConfig(backend="console"))


def cmd_run(args: argparse.Namespace) -> int:
    import ssl

    from agent.mqtt.session import InsecureBroker
    from agent.outbox import OutboxError
    from agent.outbox.store import OutboxBusy
    from agent.station import Station

    if args.config:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            for err in exc.errors:
                print(f"{exc.path}:{err}", file=sys.stderr)
            return 2
    else:
        cfg = demo_config()
        print("scanner-agent demo: no config given (-c CONFIG for a real station). Replaying bundled "
              f"sample frames; check-ins queue in {paths.outbox(Path(cfg.station.state_dir).resolve())}. "
              "Ctrl-C to stop.", flush=True)
    setup_logging(cfg.logging.level)
    try:
        station = Station(cfg)
    except OutboxBusy as exc:  # another process holds the outbox: systemd tries again shortly
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (InsecureBroker, OutboxError, OSError, ssl.SSLError, ValueError) as exc:
        # OSError, SSLError, ValueError: e.g. a CA or key file that is not PEM
        print(f"error: {exc}" if isinstance(exc, (InsecureBroker, OutboxError))
              else f"error: cannot start the station: {type(exc).__name__}: {exc}", file=sys.stderr)
        if isinstance(exc, (OutboxError, OSError)) and _disk_full(cfg.station.state_dir, exc):
            # not the config's fault: systemd tries again (exit 2 it never restarts), and the
            # station comes back by itself once space is freed
            print(f"error: the disk of {cfg.station.state_dir} is full: free space there", file=sys.stderr)
            return 1
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: station.stop())
    station.run()
    return 0


def _disk_full(state_dir: str, exc: BaseException) -> bool:
    """The error says the disk is full, or there is no free block or inode where the outbox lives
    (what SQLite needs to open it)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        st = os.statvfs(state_dir)
    except OSError:
        return False
    return st.f_bavail == 0 or (st.f_files > 0 and st.f_favail == 0)


def admin_config(args: argparse.Namespace, *, station: bool = True):
    """-c CONFIG, else the installed config, else the demo's defaults (a development machine).
    `station` False: a config that only names a broker (fleet.toml): its state_dir is not checked."""
    path = args.config or (DEFAULT_PATH if DEFAULT_PATH.exists() else None)
    if path is None:
        return demo_config()
    return load_config(path, station=station)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.admin import status

    info = status.collect(admin_config(args))
    print(json.dumps(info, ensure_ascii=False, indent=2) if args.json else status.render(info))
    return status.level(info)[0]    # 0 ok, 1 a warning, 2 a fault


def _create_outbox(cfg, path: Path) -> None:
    """`queue import` on a replacement station that has never run: a fresh outbox, as the station
    makes it; as root, handed to the state directory's owner (the service user) so the station
    can open it (never through a link)."""
    import stat

    from agent.outbox import Outbox, OutboxError

    leftovers = [p for p in (path, *(Path(f"{path}{s}") for s in ("-wal", "-shm", "-journal"))) if os.path.lexists(p)]
    if leftovers:   # a link or a stray file where the new outbox would go: never followed or reused
        raise OutboxError(f"no outbox at {path}, but {leftovers[0]} is there: move it away first")
    Outbox(path, station=cfg.station.id, max_events=cfg.outbox.max_events, min_free_mb=0).close()
    print(f"created {path} (this station had not run yet)", file=sys.stderr)
    owner = path.parent.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                if stat.S_ISREG(p.lstat().st_mode):
                    os.chown(p, owner.st_uid, owner.st_gid, follow_symlinks=False)
            except FileNotFoundError:
                pass


def _open_outbox(cfg, *, write: bool, create: bool = False):
    """The outbox for an IT command: never moved or repaired, created only for `create` (import);
    read-only unless `write`."""
    from agent.outbox import Outbox

    path = paths.outbox(cfg.station.state_dir)
    if not path.exists() and create:
        _create_outbox(cfg, path)
    if not path.exists():
        raise ConfigError(path, ["0: no outbox here (is state_dir right, and has the station run?)"])
    return Outbox(path, station=cfg.station.id, max_events=cfg.outbox.max_events, admin=True,
                  readonly=not write)


def cmd_queue(args: argparse.Namespace) -> int:
    from agent.admin.files import RefusedPath
    from agent.outbox import OutboxError

    cfg = admin_config(args)
    try:
        box = _open_outbox(cfg, write=args.action in ("retry", "import"), create=args.action == "import")
    except OutboxError as exc:
        print(f"queue {args.action}: {exc}", file=sys.stderr)
        return 1
    try:
        return _queue(args, box, cfg)
    except RefusedPath as exc:
        print(f"queue {args.action}: {exc}", file=sys.stderr)
        return 2
    except (OutboxError, OSError) as exc:
        print(f"queue {args.action}: {getattr(exc, 'strerror', None) or exc}"
              + (f": {exc.filename}" if getattr(exc, "filename", None) else ""), file=sys.stderr)
        return 1
    finally:
        box.close()


def _queue(args: argparse.Namespace, box, cfg) -> int:
    from agent.admin import queue

    state_dir = Path(cfg.station.state_dir)
    if args.action == "list":
        receipts = cfg.mqtt is not None and cfg.mqtt.delivered_on == "receipt"
        print("\n".join(queue.list_rows(box, limit=args.limit, undelivered_only=not args.all, reveal=args.reveal,
                                        receipts=receipts)))
    elif args.action == "show":
        shown = queue.show(box, args.id, args.reveal)
        if shown is None:
            print(f"no check-in {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(shown, ensure_ascii=False, indent=2))
    elif args.action == "retry":
        unknown = queue.retry(box, args.ids)
        for i in unknown:
            print(f"no check-in {i}", file=sys.stderr)
        print(f"{len(args.ids) - len(unknown)} check-in(s) queued for resending; "
              f"{box.depth()} undelivered in all (a running station sends them within a few seconds, once the broker is reachable)")
        return 1 if unknown else 0
    elif args.action == "export":
        if not args.force and os.path.isfile(args.file) and not os.path.islink(args.file):
            print(f"queue export: {args.file} exists: give a new file name, or --force to replace it",
                  file=sys.stderr)
            return 2
        n = queue.export(box, Path(args.file), state_dir)
        print(f"{n} undelivered check-in(s) written to {args.file} (JSON lines, mode 600; "
              "they contain personal data: delete the file after use)")
    elif args.action == "import":
        return _queue_import(args, box)
    return 0


def _queue_import(args: argparse.Namespace, box) -> int:
    from agent.admin import queue

    path = Path(args.file)
    report = queue.import_file(box, path)
    for line in report.rejected[:20]:
        print(f"{path}: {line}", file=sys.stderr)
    if len(report.rejected) > 20:
        print(f"{path}: ... and {len(report.rejected) - 20} more not imported", file=sys.stderr)
    lost = "" if report.lost == 0 else (f"; {'an unknown number' if report.lost is None else report.lost} "
                                        "undelivered check-in(s) in it could not be read")
    how = {"read": "", "header repaired": ", its damaged header rebuilt in memory",
           "page scan": ", found by a page scan: delivered or not cannot be told, the hospital "
                        "deduplicates by id"}[report.method]
    print(f"{report.added} check-in(s) queued for sending from {path} ({report.source}{how}), "
          f"{report.already} already queued here, {len(report.rejected)} not imported{lost}; "
          f"{box.depth()} undelivered in all")
    if args.delete_after and not report.rejected:
        from agent.outbox.store import delete_files

        delete_files(path)
        print(f"{path} deleted: its readable check-ins are safe in the outbox")
    return 1 if report.rejected else 0


def cmd_feedback_test(args: argparse.Namespace) -> int:
    import time

    from agent.feedback import DESCRIPTIONS, Feedback, Signal, duration, make_output

    cfg = admin_config(args)
    fb = Feedback(make_output(cfg.feedback))
    try:
        for sig in Signal:
            print(f"{sig.value:22s} {DESCRIPTIONS[sig]}", flush=True)
            fb.signal(sig)
            time.sleep(duration(sig) + 0.6)
    finally:
        fb.close()
    return _voice_test(cfg.feedback)


def _voice_test(fcfg) -> int:
    """Play every voice prompt once, to the end; 1 when one could not be played."""
    from agent.feedback.audio import AplayPlayer
    from agent.feedback.voice import PROMPTS

    if not fcfg.voice:
        print("voice: off ([feedback] voice = false)")
        return 0
    player, failed = AplayPlayer(fcfg.voice_device), 0
    for name, text in PROMPTS.items():
        path = Path(fcfg.voice_dir) / f"{name}.wav"
        if not path.is_file():
            print(f"{name:30s} MISSING {path}", flush=True)
            failed += 1
            continue
        print(f"{name:30s} {text}", flush=True)
        player.warning = None
        player.play(path, fcfg.voice_volume)
        player.wait(timeout=30)
        if player.warning:
            print(f"{'':30s} {player.warning}", flush=True)
            failed += 1
    player.close()
    return 1 if failed else 0


def cmd_fleet(args: argparse.Namespace) -> int:
    import ssl
    import time

    from agent.admin import fleet

    cfg = admin_config(args, station=False)   # IT's fleet.toml need not name a state directory
    if cfg.mqtt is None:
        print("fleet: the config has no [mqtt] section (the broker to read the fleet from)", file=sys.stderr)
        return fleet.UNKNOWN
    while True:
        subacks: list[str] = []
        try:
            stations = fleet.collect(cfg.mqtt, wait_s=args.wait, subacks=subacks)
        except (OSError, ssl.SSLError, ConnectionError, ValueError) as exc:
            from agent.mqtt.session import describe

            print(f"UNKNOWN: broker {cfg.mqtt.host}:{cfg.mqtt.port}: {describe(exc, cfg.mqtt.tls, f'{cfg.mqtt.host}:{cfg.mqtt.port}')}",
                  file=sys.stderr)
            return fleet.UNKNOWN
        rows = fleet.assess(stations, health_interval_s=cfg.mqtt.health_interval_s, warn_s=args.warn, crit_s=args.crit,
                            expect_version=args.expect_version)
        status = fleet.overall(rows)
        if args.json:
            print(fleet.as_json(rows), flush=True)
        else:
            if args.watch:
                print("\033[2J\033[H", end="")
            print(fleet.render(rows) if rows else fleet.no_reports(cfg.mqtt, cfg.station.id, subacks))
            mixed = fleet.versions(rows)
            if mixed:
                print(f"note: {mixed}")
            counts = {name: sum(r.level == lvl for r in rows) for lvl, name in fleet.LEVELS.items() if lvl != fleet.UNKNOWN}
            print(f"{fleet.LEVELS[status]}: {len(rows)} station(s); " + ", ".join(f"{n} {k.lower()}" for k, n in counts.items()),
                  flush=True)
        if not args.watch:
            return status
        time.sleep(max(1.0, args.every))


#: What `output test` types: an input method that rewrites keys (Telex: aa -> â, dd -> đ, af -> à;
#: VNI: a1 -> á) shows at a glance on the counter PC.
PROBE = "scanner-agent test: aa dd ee af a1 0123456789"


def cmd_output_test(args: argparse.Namespace) -> int:
    import time

    from agent.outputs.devices import make_outputs

    cfg = admin_config(args)
    outputs = make_outputs(cfg)
    if not outputs:
        print("no output enabled: set [output.keyboard] or [output.serial] enabled = true", file=sys.stderr)
        return 2
    status = 0
    for out in outputs:
        out.writer.dropped_note = "it was the probe line of 'output test' (no check-in involved)"
        w = out.writer.start()
        out.writer.send(out.cfg.prefix + PROBE + "\n" + out.cfg.suffix)
        deadline = time.monotonic() + out.cfg.timeout_s + 2
        while out.writer.sent + out.writer.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        w.stop()
        if out.writer.sent:
            print(f"{out.writer.kind:8s} sent to {out.writer.device}: {PROBE!r}. On the PC it must read "
                  "exactly so; 'â đ ê à á' instead means an input method rewrites keys (see README)")
        else:
            print(f"{out.writer.kind:8s} the probe line was NOT sent to {out.writer.device}: {out.writer.device_fault}; "
                  "check the cable and that the PC reads it (README 'Using the station as a USB scanner')",
                  file=sys.stderr)
            status = 1
    return status


def cmd_snapshot(args: argparse.Namespace) -> int:
    from agent.admin.snapshot import take

    from agent.admin.files import RefusedPath

    try:
        origin = take(admin_config(args), Path(args.out))
    except RefusedPath as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"snapshot failed: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: frame from the {origin}; codes outlined in green, saturated (glare) areas in red")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.admin import doctor

    path = Path(args.config) if args.config else DEFAULT_PATH
    checks = doctor.run(path)
    for c in checks:
        print(c.line())
    if checks[0].name == "config" and not checks[0].ok:
        print("the config cannot be read: nothing else checked")
        return 2
    failed = [c for c in checks if not c.ok]
    print(f"{len(failed)} problem(s) to fix" if failed else "all checks passed")
    return 1 if failed else 0


def _tool_test(sub, name: str, help: str, test_help: str, func, cfg_help: str) -> None:
    """`scanner-agent NAME test [-c CONFIG]`: the hardware checks IT runs by hand."""
    p = sub.add_parser(name, help=help)
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    tsub = p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    t = tsub.add_parser("test", help=test_help)
    t.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS, help=cfg_help)
    t.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanner-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scanner-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="read a QR text as a BHYT / CCCD card")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--today", type=_date, default=None, help="judge validity and ages as of this date "
                   "(YYYY-MM-DD)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="take [station] facility_codes and [checkin] "
                   "priority_groups from this config (default: no facility codes, the law's groups)")
    p.add_argument("text", metavar="TEXT", help="the decoded QR text, or - to read standard input")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("decode", help="decode the QR codes in image files")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--strategy", default="cascade",
                   help="cascade (default), baseline = plain zxing-cpp, or one named strategy")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("run", help="run the station (no config: a demo with bundled frames)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="station config file (TOML)")
    p.set_defaults(func=cmd_run)

    cfg_help = f"station config (default {DEFAULT_PATH}, else the demo's)"
    p = sub.add_parser("status", help="service, camera, broker, queue, clock and disk at a glance")
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("queue", help="inspect the check-in outbox")
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    qsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    # -c after the action too (`queue list -c CONFIG`, like `doctor -c`); SUPPRESS keeps the one
    # given before the action when none is given after it
    qcfg = argparse.ArgumentParser(add_help=False)
    qcfg.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS, help=cfg_help)
    qsub.add_parser = functools.partial(qsub.add_parser, parents=[qcfg])
    q = qsub.add_parser("list", help="recent check-ins (undelivered only unless --all)")
    q.add_argument("--all", action="store_true", help="delivered ones too (kept for the retention time)")
    q.add_argument("--limit", type=_limit, default=50, help=f"at most this many (1-{MAX_LIMIT})")
    q.add_argument("--reveal", action="store_true", help="show names unmasked")
    q = qsub.add_parser("show", help="one check-in as JSON (personal data masked unless --reveal)")
    q.add_argument("id")
    q.add_argument("--reveal", action="store_true")
    q = qsub.add_parser("retry", help="send delivered check-ins again")
    q.add_argument("ids", nargs="+", metavar="ID")
    q = qsub.add_parser("export", help="write undelivered check-ins to a new FILE as JSON lines (mode 600)")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace FILE if it exists")
    q = qsub.add_parser("import", help="queue the check-ins of a 'queue export' file or of a damaged "
                                       "outbox file kept aside, for sending (idempotent)")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--delete-after", action="store_true",
                   help="delete FILE once its readable check-ins are queued here")
    p.set_defaults(func=cmd_queue)

    _tool_test(sub, "feedback", "LED and buzzer tools", "play every LED/buzzer pattern once, then every voice prompt", cmd_feedback_test,
               cfg_help)

    p = sub.add_parser("fleet", help="every station on the broker at a glance (exit 0/1/2/3 like a monitoring check)")
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help + "; its [mqtt] section names the broker")
    p.add_argument("--json", action="store_true", help="one JSON array of stations")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--every", type=float, default=5.0, help="--watch refresh interval, seconds (default %(default)g)")
    p.add_argument("--warn", type=float, default=300.0,
                   help="warning when the oldest queued check-in is older (s; default %(default)g)")
    p.add_argument("--crit", type=float, default=1800.0,
                   help="critical when the oldest queued check-in is older (s; default %(default)g)")
    p.add_argument("--wait", type=float, default=2.0,
                   help="seconds to collect the retained reports (default %(default)g)")
    p.add_argument("--expect-version", metavar="VERSION",
                   help="warning for every station running another version (e.g. during a rollout)")
    p.set_defaults(func=cmd_fleet)

    _tool_test(sub, "output", "keyboard and serial output tools", "type or send a test line on every enabled output",
               cmd_output_test, cfg_help)

    p = sub.add_parser("snapshot", help="save the current camera frame with codes and glare drawn on it")
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    p.add_argument("out", metavar="OUT.jpg")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("doctor", help="check config, camera, GPIO, broker, TLS, clock, disk, permissions")
    p.add_argument("-c", "--config", metavar="CONFIG", help=f"default {DEFAULT_PATH}")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="load and validate a config file")
    c.add_argument("path", nargs="?", metavar="PATH", help=f"default {DEFAULT_PATH}")
    c.add_argument("-c", "--config", metavar="CONFIG", help="the same as PATH")
    c.set_defaults(func=cmd_config_check)
    return parser


def _safe_streams() -> None:
    """A terminal or pipe that cannot show Vietnamese (PYTHONIOENCODING=ascii, LANG=C) gets
    escapes instead of a UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def main(argv: list[str] | None = None) -> int:
    _safe_streams()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"{exc.path}:{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - an outbox or OS error in an IT command: one line, no traceback
        from agent.outbox import OutboxError

        if not isinstance(exc, (OutboxError, OSError)):
            raise
        print(f"scanner-agent {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
