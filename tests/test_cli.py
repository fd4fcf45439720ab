"""The CLI contract, run as a real process the way hospital IT and later pieces call it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.daemon import cli
from support.payloads import BHYT10, BHYT15, CCCD, VIETQR

ROOT = Path(__file__).resolve().parents[1]


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "agent", *args], input=stdin, capture_output=True,
                          cwd=ROOT, timeout=60)


def parse_json(*args, stdin=None):
    proc = run("parse", "--json", *args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1  # exactly one JSON object
    return json.loads(lines[0])


@pytest.mark.parametrize("payload,kind", [(BHYT15, "bhyt"), (BHYT10, "bhyt"), (CCCD, "cccd"), (VIETQR, "other")])
def test_parse_json_shape(payload, kind):
    out = parse_json("--today", "2026-11-24", payload)
    # a CCCD adds the keys its chip would be opened with (tests/test_chip_access.py)
    assert set(out) == {"kind", "verdict", "problems", "card", "flags"} | ({"chip_access"} if kind == "cccd" else set())
    assert out["kind"] == kind


def test_parse_bhyt_card_keys():
    card = parse_json("--today", "2026-11-24", BHYT10)["card"]
    for key in ("card_number", "generation", "bhxh_number", "name", "birth_date", "sex", "address",
                "facility_code", "valid_from", "valid_to", "issued", "management_code",
                "benefit_level", "group_code", "check_string"):
        assert key in card
    assert card["generation"] == "10" and card["benefit_level"] == 4


def test_parse_cccd_card_keys():
    card = parse_json(CCCD)["card"]
    assert {"id_number", "old_id_number", "name", "birth_date", "sex", "address", "issued"} <= set(card)


def test_parse_today_changes_verdict():
    expired = BHYT15.replace("|-|01/01/2024|", "|31/12/2025|01/01/2024|")
    assert parse_json("--today", "2025-06-01", expired)["verdict"] == "ok"
    assert parse_json("--today", "2026-06-01", expired)["verdict"] == "expired"


def test_parse_stdin_bytes():
    out = parse_json("-", stdin=CCCD.encode() + b"\n")
    assert out["kind"] == "cccd" and out["verdict"] == "ok"
    out = parse_json("-", stdin=b"\xff\xfe|\x00\x1b[2J")
    assert out["verdict"] in ("unsupported", "invalid")


def test_parse_human_output():
    proc = run("parse", BHYT15)
    assert proc.returncode == 0 and b"bhyt: ok" in proc.stdout and "Nguyễn Văn An".encode() in proc.stdout


def test_usage_errors_exit_2():
    assert run("parse", "--today", "24/11/2026", CCCD).returncode == 2
    assert run("parse").returncode == 2
    assert run("frobnicate").returncode == 2


def test_version():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("scanner-agent ")


def test_config_check(tmp_path):
    ok = run("config", "check", str(ROOT / "config" / "config.toml"))
    assert ok.returncode == 0 and b"ok" in ok.stdout
    bad = tmp_path / "c.toml"
    bad.write_text("[camera]\nsorce = 'replay'\n")
    proc = run("config", "check", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:2: unknown key camera.sorce".encode() in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_config_option_is_accepted_at_every_level():
    """`-c CONFIG` before or after the action, as `doctor -c` takes it; the later one wins."""
    from agent.cli import build_parser

    parse = build_parser().parse_args
    for argv in (["queue", "-c", "a.toml", "list"], ["queue", "list", "-c", "a.toml"],
                 ["queue", "-c", "b.toml", "list", "-c", "a.toml"], ["queue", "export", "x", "-c", "a.toml"],
                 ["feedback", "-c", "a.toml", "test"], ["feedback", "test", "-c", "a.toml"],
                 ["output", "-c", "a.toml", "test"], ["config", "check", "-c", "a.toml"],
                 ["doctor", "-c", "a.toml"], ["status", "-c", "a.toml"], ["fleet", "-c", "a.toml"]):
        args = parse(argv)
        assert (args.config if argv[0] != "config" else args.config or args.path) == "a.toml", argv
    assert parse(["queue", "-c", "b.toml", "list"]).config == "b.toml"


@pytest.mark.parametrize("args", [("parse", "--json", BHYT15), ("parse", CCCD),
                                  ("decode", "--json", "agent/samples/frames/000.jpg"), ("--help",)])
def test_a_reader_that_goes_away_ends_the_command_quietly(args):
    """`scanner-agent parse ... | head -0`: standard output's reader has gone before a line is
    written. Exit 0 with nothing on standard error (no 'Broken pipe', no 'Exception ignored')."""
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "agent", *args], stdout=write, stderr=subprocess.PIPE,
                              cwd=ROOT, timeout=60)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, b"")


def test_parse_with_standard_output_closed_is_no_traceback():
    closed = subprocess.run(f"'{sys.executable}' -m agent parse hello >&-", shell=True, capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert closed.returncode == 0 and "Traceback" not in closed.stderr, closed.stderr


def test_parse_with_standard_input_closed_and_an_ascii_terminal():
    from agent.sim.demo import CCCD

    closed = subprocess.run(f"'{sys.executable}' -m agent parse - <&-", shell=True, capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert closed.returncode == 2 and "no standard input" in closed.stderr and "Traceback" not in closed.stderr
    ascii_term = cli("parse", CCCD, env={"PYTHONIOENCODING": "ascii"})
    assert ascii_term.returncode == 0 and "Traceback" not in ascii_term.stderr
    assert "cccd: ok" in ascii_term.stdout and "Nguy\\u1ec5n" in ascii_term.stdout
