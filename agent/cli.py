"""`scanner-agent` command line. Exit status: 0 done, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path

from agent import __version__
from agent.cards import read_card
from agent.config import DEFAULT_PATH, ConfigError, load_config


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from None


def _print_read(read, as_json: bool) -> None:
    if as_json:
        print(json.dumps(read.to_dict(), ensure_ascii=False))
        return
    print(f"{read.kind}: {read.verdict}")
    for key, value in read.card.items():
        if value not in (None, [], ""):
            print(f"  {key}: {value}")
    for p in read.problems:
        print(f"  ! {p.code}: {p.message}")


def cmd_parse(args: argparse.Namespace) -> int:
    if args.text == "-":
        data: str | bytes = sys.stdin.buffer.read().rstrip(b"\r\n")
    else:
        data = args.text
    _print_read(read_card(data, args.today), args.json)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else DEFAULT_PATH
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
    from agent.decode import decode, decode_with

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
    """Embedded defaults: bundled frames replayed, console signals, ./state, no broker."""
    from agent.config import Config

    cfg = Config()
    cfg.camera.fps = 4.0  # slow enough to watch each presentation
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from agent.mqtt.link import InsecureBroker
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
              f"sample frames; check-ins queue in {Path(cfg.station.state_dir).resolve()}/outbox.db. "
              "Ctrl-C to stop.", flush=True)
    setup_logging(cfg.logging.level)
    try:
        station = Station(cfg)
    except InsecureBroker as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: station.stop())
    station.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanner-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scanner-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="read a QR text as a BHYT / CCCD card")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--today", type=_date, default=None, help="judge validity as of this date (YYYY-MM-DD)")
    p.add_argument("text", metavar="TEXT", help="the decoded QR text, or - to read standard input")
    p.set_defaults(func=cmd_parse)

    from agent.decode.strategies import STRATEGIES

    p = sub.add_parser("decode", help="decode the QR codes in image files")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--strategy", default="cascade", choices=["cascade", "baseline", *STRATEGIES],
                   help="cascade (default), baseline = plain zxing-cpp, or one named strategy")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("run", help="run the station (no config: a demo with bundled frames)")
    p.add_argument("-c", "--config", metavar="CONFIG", help="station config file (TOML)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    c = csub.add_parser("check", help="load and validate a config file")
    c.add_argument("path", nargs="?", metavar="PATH", help=f"default {DEFAULT_PATH}")
    c.set_defaults(func=cmd_config_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
