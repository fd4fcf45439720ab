"""Camera frames for the USB keyboard check of scripts/test-vm, and the lines they must type.

COUNT distinct BHYT codes (the demo card with another card number each), then as many again with
control characters hidden at the start of fields 2 to 4 (Enter, Tab, CR/LF, Escape...: a hostile
QR), one code per frame, each card another, so that each frame is a check-in of its own (the
station replays them slowly: its camera loop keeps only the latest frame). The
expected lines are what the station's keyboard output makes of each, as the template says (the
default "{raw}{enter}"), Enter left off: the reader splits lines there.

The frames come in batches, each smaller than the station's output queue, replayed one after the
other once the last is typed: a line takes over 3 s to type and a frame comes every 2 s, so one
run of 109 frames filled the queue and the station rightly dropped the oldest lines (one run of
scripts/test-vm typed 82 of 109). A batch can never fill it, however slow the emulated keyboard.

    python usb_frames.py DIR COUNT      writes DIR/batch-K/NNNN.png (K = 0, 1...) and DIR/expected.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import zxingcpp

from agent.cards import read_card
from agent.config import Config
from agent.outputs.devices import Output
from agent.outputs.writer import QUEUE_SIZE
from agent.sim.demo import BHYT15

BATCH = QUEUE_SIZE - 4    # frames replayed at a time (the queue, less a margin)
HOSTILE = ["\n", "\t", "\r\n", "\r", "\x1b", "\x7f", "\x85", "\u2028", "\u202e"]


def frame(text: str) -> np.ndarray:
    canvas = np.full((720, 1280), 128, np.uint8)
    img = np.array(zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
                   .to_image(scale=5, add_quiet_zones=True))
    canvas[40:40 + img.shape[0], 300:300 + img.shape[1]] = img
    return canvas


def codes(count: int) -> list[str]:
    tokens = BHYT15.split("|")
    out = []
    for i in range(count + len(HOSTILE)):
        tokens[0] = f"DN479{i:010d}"
        code = "|".join(tokens)
        out.append(code if i < count else code.replace("|", "|" + HOSTILE[i - count], 3))
    return out


def main(folder: Path, count: int) -> None:
    keyboard = Output(Config().keyboard, None)
    expected = []
    for i, code in enumerate(codes(count)):
        read = read_card(code)
        assert read.kind == "bhyt", code
        typed = keyboard.text("bhyt", read.card, code)
        assert typed.endswith("\n") and typed.count("\n") == 1, typed
        expected.append(typed[:-1])
        batch = folder / f"batch-{i // BATCH}"
        batch.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(batch / f"{i:04d}.png"), frame(code))
    (folder / "expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
