"""`scanner-agent` command line. Exit status: 0 done, 1 runtime failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import json
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scanner-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"scanner-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("parse", help="read a QR text as a BHYT / CCCD card")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--today", type=_date, default=None, help="judge validity as of this date (YYYY-MM-DD)")
    p.add_argument("text", metavar="TEXT", help="the decoded QR text, or - to read standard input")
    p.set_defaults(func=cmd_parse)

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
