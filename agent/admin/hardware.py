"""`scanner-agent feedback test` and `output test`: the hardware checks IT runs by hand, at the
station, watching the LEDs, listening to the buzzer and the voice, reading the counter PC."""

from __future__ import annotations

import sys
import time

from agent import paths
from agent.config import Config, FeedbackConfig

#: What `output test` types: an input method that rewrites keys (Telex: aa -> â, dd -> đ, af -> à;
#: VNI: a1 -> á) shows at a glance on the counter PC.
PROBE = "scanner-agent test: aa dd ee af a1 0123456789"


def feedback_test(cfg: Config) -> int:
    """Every LED/buzzer pattern once, named as it plays, then every voice prompt; 1 when a prompt
    could not be played."""
    from agent.feedback import DESCRIPTIONS, Feedback, Signal, duration, make_output

    fb = Feedback(make_output(cfg.feedback))
    try:
        for sig in Signal:
            print(f"{sig.value:22s} {DESCRIPTIONS[sig]}", flush=True)
            fb.signal(sig)
            time.sleep(duration(sig) + 0.6)
    finally:
        fb.close()
    return voice_test(cfg.feedback)


def voice_test(fcfg: FeedbackConfig) -> int:
    """Play every voice prompt once, to the end; 1 when one could not be played."""
    from agent.feedback.audio import AplayPlayer
    from agent.feedback.voice import PROMPTS

    if not fcfg.voice:
        print("voice: off ([feedback] voice = false)")
        return 0
    player, failed = AplayPlayer(fcfg.voice_device), 0
    for name, text in PROMPTS.items():
        path = paths.prompt(fcfg.voice_dir, name)
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


def output_test(cfg: Config) -> int:
    """Type or send PROBE on every enabled output; 1 when one could not be sent, 2 when none is
    enabled."""
    from agent.outputs.devices import make_outputs

    outputs = make_outputs(cfg, records=False)   # a probe line is no check-in: nothing to acknowledge
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


def output_ack(cfg: Config) -> int:
    """IT has seen to the lines the keyboard or serial output dropped or typed short (the HIS lacks
    those check-ins as read: `queue list` shows them): their fault clears. Through the running
    daemon, which holds the record; with the daemon stopped, its files are removed here. 0 done
    (also when there was nothing), 1 when the daemon could not be asked."""
    from agent import jsonbound, runstate
    from agent.cards.sanitize import one_line
    from agent.control import request
    from agent.outputs import record

    state = cfg.station.state_dir
    sock = paths.control_socket(state)
    if runstate.read(paths.status_file(state)) is not None and sock.exists():
        try:
            said = jsonbound.loads(request(sock, "output_ack", timeout=10, max_bytes=1 << 16), max_bytes=1 << 16,
                                   max_depth=2)
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"scanner-agent output ack: the running daemon did not answer: {exc}", file=sys.stderr)
            return 1
        said = [one for one in said if isinstance(one, str)] if isinstance(said, list) else []
    else:
        said = []
        for kind in record.KINDS:
            path = paths.output_record(state, kind)
            if (lost := record.load(path)) is not None:
                said.append(lost.text(kind))
                record.clear(path)
    for text in said:
        print(f"acknowledged: {one_line(text, 400)}")
    if not said:
        print("nothing to acknowledge: every line was typed or sent as read")
    return 0


def chip_test(cfg: Config, text: str, *, wait_s: float = 15.0, reveal: bool = False, transport=None) -> int:
    """`scanner-agent chip test QR`: read the card on the reader with the keys of its QR text, as
    the station would, and print what was verified. 0 verified (chain or signature) and the same
    person as the QR, 1 not (no card, failed, another person), 2 no reader configured or not a
    CCCD's QR. The chip's fields are named, their values shown only with `reveal`; the face never."""
    from agent.cards import read_card
    from agent.chip.counter import ChipReader, chip_fields

    if cfg.chip.reader == "none" and transport is None:
        print('no chip reader configured: set [chip] reader = "pcsc" or "pn532"', file=sys.stderr)
        return 2
    if text == "-":
        try:
            text = sys.stdin.buffer.read(65536).rstrip(b"\r\n") if sys.stdin is not None else b""
        except OSError as exc:
            print(f"chip test -: cannot read standard input: {exc.strerror or exc}", file=sys.stderr)
            return 2
    read = read_card(text)
    if read.kind != "cccd" or not read.card.get("id_number"):
        print(f"not a CCCD's QR ({read.kind}, {read.verdict}): the chip's keys come from it", file=sys.stderr)
        return 2
    reader = ChipReader(cfg.chip, transport)
    print(f"lay the card on the reader ({cfg.chip.reader}; waiting up to {wait_s:g} s)...", flush=True)
    began = time.monotonic()
    try:
        out = reader.read(read.card, None, began + wait_s, wait_s)
    finally:
        reader.finish()
    r = out.result
    fields = chip_fields(r.dg13, cfg.chip.dg13_fields) if r.verified != "absent" else {}
    rows = [("access", r.access or "-"), ("verified", r.verified), ("clone", r.clone_check),
            ("reason", r.reason or "-"), ("mismatch", ", ".join(out.mismatch) or "none"),
            ("fields", ", ".join(fields) + ("" if reveal or not fields else " (values: --reveal)") or "-")]
    if reveal:
        rows += [(f"  {k}", str(v)) for k, v in fields.items()]
    rows.append(("took", f"{time.monotonic() - began:.2f} s"))
    for name, value in rows:
        print(f"{name:10s} {value}")
    return 0 if r.verified in ("chain", "signature") and not out.mismatch else 1
