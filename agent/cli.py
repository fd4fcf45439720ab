"""`scanner-agent` command line: the arguments, and the one mapping of a failure to the exit status
(exit_status). Exit status: 0 done, 1 runtime failure, 2 usage or config error (fleet: 0-3, as a
monitoring check). The commands' bodies live in agent/admin/."""

from __future__ import annotations

import argparse
import functools
import json
import os
import select
import sys
from datetime import date
from pathlib import Path

from agent import __version__, paths
from agent.admin.run import demo_config
from agent.config import Config, ConfigError
from agent.outputs.checks import load_config   # config with the outputs' checks (templates)


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


def admin_config(args: argparse.Namespace, *, station: bool = True) -> Config:
    """-c CONFIG, else the installed config, else the demo's defaults (a development machine).
    `station` False: a config that only names a broker (fleet.toml): its state_dir is not checked."""
    path = args.config or (paths.CONFIG if paths.CONFIG.exists() else None)
    if path is None:
        return demo_config()
    return load_config(path, station=station)


def cmd_parse(args: argparse.Namespace) -> int:
    from agent.admin import read

    # only the facility codes and priority groups are read: parse never touches the state directory
    cfg = load_config(args.config, station=False) if args.config else None
    return read.parse(args.text, cfg, today=args.today, as_json=args.json)


def cmd_decode(args: argparse.Namespace) -> int:
    from agent.admin import read

    return read.decode_images(args.images, args.strategy, as_json=args.json)


def cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path or args.config or paths.CONFIG)
    load_config(path)
    print(f"{path}: ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from agent.admin import run

    return run.run(load_config(args.config) if args.config else None)


def cmd_status(args: argparse.Namespace) -> int:
    from agent.admin import status

    info = status.collect(admin_config(args))
    print(json.dumps(info, ensure_ascii=False, indent=2) if args.json else status.render(info))
    return status.level(info)[0]    # 0 ok, 1 a warning, 2 a fault


def cmd_queue(args: argparse.Namespace) -> int:
    from agent.admin import queue

    return queue.command(args, admin_config(args))


def cmd_feedback_test(args: argparse.Namespace) -> int:
    from agent.admin import hardware

    return hardware.feedback_test(admin_config(args))


def cmd_output_test(args: argparse.Namespace) -> int:
    from agent.admin import hardware

    return hardware.output_test(admin_config(args))


def cmd_chip_test(args: argparse.Namespace) -> int:
    from agent.admin import hardware

    return hardware.chip_test(admin_config(args), args.text, wait_s=args.wait, reveal=args.reveal)


def cmd_output_ack(args: argparse.Namespace) -> int:
    from agent.admin import hardware

    return hardware.output_ack(admin_config(args))


def cmd_fleet(args: argparse.Namespace) -> int:
    from agent.admin import fleet

    cfg = admin_config(args, station=False)   # IT's fleet.toml need not name a state directory
    return fleet.watch(cfg, json_out=args.json, refresh=args.watch, every=args.every, wait_s=args.wait,
                       warn_s=args.warn, crit_s=args.crit, expect_version=args.expect_version)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from agent.admin.snapshot import take

    origin = take(admin_config(args), Path(args.out))
    print(f"{args.out}: frame from the {origin}; codes outlined in green, saturated (glare) areas in red")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from agent.admin import doctor

    return doctor.report(Path(args.config) if args.config else paths.CONFIG)


def _tool_test(sub, name: str, help: str, test_help: str, func, cfg_help: str):
    """`scanner-agent NAME test [-c CONFIG]`: the hardware checks IT runs by hand. Returns the
    actions' subparsers, for more actions than `test`."""
    p = sub.add_parser(name, help=help)
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    tsub = p.add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
    t = tsub.add_parser("test", help=test_help)
    t.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS, help=cfg_help)
    t.set_defaults(func=func)
    return tsub


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanner-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scanner-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="read a QR text as a BHYT / CCCD card")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--today", type=_date, default=None, help="judge validity and ages as of this date "
                   "(YYYY-MM-DD; default: today in -c's [station] timezone, else Asia/Ho_Chi_Minh)")
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

    cfg_help = f"station config (default {paths.CONFIG}, else the demo's)"
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
    q = qsub.add_parser("retry", help="send delivered or undeliverable check-ins again")
    q.add_argument("ids", nargs="+", metavar="ID")
    q = qsub.add_parser("export", help="write undelivered check-ins to a new FILE as JSON lines (mode 600)")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace FILE if it exists")
    q = qsub.add_parser("remove", help="write check-ins to a new FILE (JSON lines, mode 600), then delete them "
                                       "from the outbox (one the broker will not take: UNDELIVERABLE in 'list')")
    q.add_argument("ids", nargs="+", metavar="ID")
    q.add_argument("--export", required=True, metavar="FILE",
                   help="the new file they are written to first (never an existing one)")
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

    osub = _tool_test(sub, "output", "keyboard and serial output tools", "type or send a test line on every enabled output",
                      cmd_output_test, cfg_help)
    a = osub.add_parser("ack", help="clear the fault of lines an output dropped or typed short, once seen to")
    a.add_argument("-c", "--config", metavar="CONFIG", default=argparse.SUPPRESS, help=cfg_help)
    a.set_defaults(func=cmd_output_ack)

    csub = _tool_test(sub, "chip", "CCCD chip reader tools", "read the card on the reader with the keys of its "
                      "QR and print what was verified", cmd_chip_test, cfg_help)
    t = csub.choices["test"]
    t.add_argument("text", metavar="QR", help="the card's decoded QR text (as 'parse' takes it), or - for standard input")
    t.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the card (default %(default)g)")
    t.add_argument("--reveal", action="store_true", help="print the chip's fields (default: their names only)")

    p = sub.add_parser("snapshot", help="save the current camera frame with codes and glare drawn on it")
    p.add_argument("-c", "--config", metavar="CONFIG", help=cfg_help)
    p.add_argument("out", metavar="OUT.jpg")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("doctor", help="check config, camera, GPIO, broker, TLS, clock, disk, permissions")
    p.add_argument("-c", "--config", metavar="CONFIG", help=f"default {paths.CONFIG}")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="load and validate a config file")
    c.add_argument("path", nargs="?", metavar="PATH", help=f"default {paths.CONFIG}")
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


def exit_status(exc: Exception, args: argparse.Namespace) -> int | None:
    """The one place a failure becomes the exit status (the module's docstring), with what IT
    reads on standard error; None for anything else, which is a bug: its traceback is shown.

    2 means a person must change something first (the config, a file name); 1 that it may work
    when tried again (systemd restarts `run` on 1, never on 2); 3 is fleet's UNKNOWN (a
    monitoring check's exit status)."""
    from agent.admin.files import RefusedPath
    from agent.admin.fleet import UNKNOWN, BrokerUnreachable
    from agent.admin.run import CannotStart
    from agent.outbox import OutboxError

    where = " ".join(filter(None, ("scanner-agent", args.command, getattr(args, "action", None))))
    if isinstance(exc, BrokenPipeError) and _stdout_gone():   # `... | head`: nothing more to say
        _quiet_stdout()
        return 0
    if isinstance(exc, ConfigError):
        for err in exc.errors:
            print(f"{exc.path}:{err}", file=sys.stderr)
        return 2
    if isinstance(exc, CannotStart):
        print("\n".join(exc.lines), file=sys.stderr)
        return 1 if exc.retry else 2
    if isinstance(exc, BrokerUnreachable):
        print(exc, file=sys.stderr)
        return UNKNOWN
    if isinstance(exc, RefusedPath):
        print(f"{where}: {exc}", file=sys.stderr)
        return 2
    # an outbox or OS error in an IT command (picamera2 says RuntimeError for a camera that fails)
    if isinstance(exc, (OutboxError, OSError)) or (args.command == "snapshot" and isinstance(exc, RuntimeError)):
        text = getattr(exc, "strerror", None) or exc
        print(f"{where}: {text}" + (f": {exc.filename}" if getattr(exc, "filename", None) else ""), file=sys.stderr)
        return 1
    return None


def _stdout_gone() -> bool:
    """Standard output is a pipe whose reader has gone (poll says POLLERR), as opposed to another
    pipe or socket the command wrote to (a daemon's control socket): only the first is quiet."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _quiet_stdout() -> None:
    """Standard output's reader is gone: what is still buffered goes to /dev/null, so that Python's
    flush at exit does not print 'Exception ignored ... BrokenPipeError' (the recipe of the
    signal module's documentation, 'Note on SIGPIPE')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # no real file behind sys.stdout (a test's capture)
        pass


def main(argv: list[str] | None = None) -> int:
    _safe_streams()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:      # --help, --version or a usage error, printed: flushed here, where a
        _flush_stdout()     # closed pipe can still be caught
        raise
    try:
        status = args.func(args)
        if sys.stdout is not None:   # None: started with standard output closed
            sys.stdout.flush()       # a reader that went away is found here, not in Python's flush at exit
        return status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - mapped to an exit status, or re-raised
        status = exit_status(exc, args)
        if status is None:
            raise
        return status


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
