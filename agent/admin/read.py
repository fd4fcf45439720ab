"""`scanner-agent parse` and `decode`: a QR text read as a card, and the codes in image files,
the way the station would read them (for IT, for a consumer's developer, for bug reports)."""

from __future__ import annotations

import json
import sys
from datetime import date

from agent import clock
from agent.cards import CardRead, read_card
from agent.cards.model import CardKind
from agent.config import Config


def chip_access_of(read: CardRead, today: date) -> dict | None:
    """A CCCD's `chip_access` (agent.chip.access): the keys the station would try on its chip, in
    order, so IT can see why a card does not open; {"error": ...} when none can be made; None for
    other codes."""
    if read.kind != CardKind.CCCD:
        return None
    from agent.chip.access import chip_access, issued_of

    try:
        return chip_access(read.card, issued_of(read.card), today=today).to_dict()
    except ValueError as exc:
        return {"error": str(exc)}


def print_read(read: CardRead, as_json: bool, flags: list[str] | None = None,
               chip: dict | None = None) -> None:
    if as_json:
        print(json.dumps({**read.to_dict(), **({"flags": flags} if flags is not None else {}),
                          **({"chip_access": chip} if chip is not None else {})}, ensure_ascii=False))
        return
    print(f"{read.kind}: {read.verdict}" + (f" [{', '.join(flags)}]" if flags else ""))
    for key, value in read.card.items():
        if value not in (None, [], ""):
            print(f"  {key}: {value}")
    for p in read.problems:
        print(f"  ! {p.code}: {p.message}")
    if chip is not None:
        print("  chip access, in order:" if "attempts" in chip else f"  chip access: {chip['error']}")
        for a in chip.get("attempts", ()):
            print(f"    PACE, CAN {a['can']}" if a["method"] == "pace-can" else
                  f"    BAC {a['document_number']} {a['birth_yymmdd']} {a['expiry_yymmdd']}: {a['rule']}")
        if chip.get("note"):
            print(f"    ({chip['note']})")


def parse(text: str, cfg: Config | None, *, today: date | None, as_json: bool) -> int:
    """Read `text` (- : standard input) as a card, with the counter facts `cfg` gives (None: no
    facility codes, the law's priority groups); 2 when there is no input to read."""
    from agent.cards.flags import LAW_PRIORITY_GROUPS, card_flags

    if text == "-":
        if sys.stdin is None or sys.stdin.closed:
            print("parse -: there is no standard input to read", file=sys.stderr)
            return 2
        try:
            data: str | bytes = sys.stdin.buffer.read().rstrip(b"\r\n")
        except OSError as exc:
            print(f"parse -: cannot read standard input: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        data = text
    # the station's day: its configured zone (default Asia/Ho_Chi_Minh), never this machine's
    today = today or clock.today(tz=clock.zone(cfg.station.timezone if cfg else clock.DEFAULT_ZONE))
    read = read_card(data, today)
    flags = card_flags(read, today, cfg.station.facility_codes if cfg else (),
                       cfg.checkin.priority_groups if cfg else LAW_PRIORITY_GROUPS)
    print_read(read, as_json, flags, chip_access_of(read, today))
    return 0


def load_gray(path: str):
    """An image file as grayscale, ignoring EXIF rotation (corners stay in file pixels)."""
    import cv2

    return cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)


def decode_images(images: list[str], strategy: str, *, as_json: bool) -> int:
    """The codes in each image, one line (or JSON object) an image; 1 when one cannot be read as
    an image, 2 for a strategy that does not exist."""
    from agent.decode import STRATEGIES, decode, decode_with

    if strategy not in ("cascade", "baseline", *STRATEGIES):
        print(f"unknown strategy {strategy!r}; one of: cascade, baseline, {', '.join(STRATEGIES)}",
              file=sys.stderr)
        return 2
    status = 0
    for path in images:
        gray = load_gray(path)
        if gray is None:
            print(f"{path}: cannot read as an image", file=sys.stderr)
            status = 1
            continue
        result = decode(gray) if strategy == "cascade" else decode_with(gray, strategy)
        if as_json:
            codes = [{"text": c.text, "corners": [list(p) for p in c.corners]} for c in result.codes]
            print(json.dumps({"file": path, "codes": codes, "ms": round(result.ms, 3)}, ensure_ascii=False),
                  flush=True)
        else:
            shown = "; ".join(f"{c.text[:60]!r} via {c.strategy}" for c in result.codes) or "no code"
            print(f"{path}: {shown} ({result.ms:.1f} ms)")
    return status
