"""Make the demo's bundled frames (agent/samples/frames): simulated presentations of a few
cards, an expired one, a bank QR, and a repeat, with an empty counter in between.

    python -m agent.sim.demo [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2

from agent.sim.screen import empty_scene, render

BHYT15 = ("DN4790123456789|4e677579e1bb856e2056c4836e20416e|01/01/1990|1|"
          "53e1bb91203132204cc3aa204ce1bba3692c205068c6b0e1bb9d6e672042e1babf6e204e6768c3a92c20"
          "5175e1baad6e20312c205468c3a06e68207068e1bb912048e1bb93204368c3ad204d696e68|79 - 001|"
          "01/01/2024|-|01/01/2024|79000123456789|-|4|01/01/2029|0123456789abcdef-7102|$")
BHYT10 = ("7901234567|5472e1baa76e205468e1bb8b2042c3ad6368|15/03/1985|2|-|79 - 034|01/02/2025|-|"
          "20/02/2025|79020123456700|-|4|01/01/2020|15e89ac07ee8517f-7102|4|"
          "5175e1baad6e2031322c205468c3a06e68207068e1bb912048e1bb93204368c3ad204d696e68|$")
CCCD = "079090001234|025123456|Nguyễn Văn An|01011990|Nam|12 Lê Lợi, Bến Nghé, Quận 1, TP Hồ Chí Minh|15062021"
EXPIRED = ("HT3790987654321|4c c3aa205468e1bb8b2048c3a0|1952|2|-|79 - 012|01/01/2023|31/12/2024|"
           "01/01/2023|79010987654321|-|4|-|89abcdef01234567-7102|$").replace(" ", "")
VIETQR = "00020101021238540010A00000072701240006970436011012345678900208QRIBFTTA53037045802VN6304ABCD"

#: (payload or None for an empty counter, number of frames)
SEQUENCE = [(None, 4), (BHYT15, 4), (None, 4), (CCCD, 4), (None, 4), (EXPIRED, 4), (None, 4),
            (VIETQR, 4), (None, 4), (BHYT10, 4), (None, 4), (BHYT15, 4), (None, 6)]


def write(out: Path, size=(800, 450), quality=60) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jpg"):
        old.unlink()
    n = 0
    for k, (payload, count) in enumerate(SEQUENCE):
        for i in range(count):
            frame = empty_scene(k * 10 + i) if payload is None else render(payload, "easy", k * 10 + i).frame
            cv2.imwrite(str(out / f"{n:03d}.jpg"), cv2.resize(frame, size, interpolation=cv2.INTER_AREA),
                        [cv2.IMWRITE_JPEG_QUALITY, quality])
            n += 1
    return n


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "samples" / "frames"
    print(f"wrote {write(target)} frames to {target}")
