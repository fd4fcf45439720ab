"""The keyboard and serial outputs built from the config."""

from __future__ import annotations

import os
import termios
from typing import Any

from agent import paths
from agent.config import Config
from agent.outputs import hid
from agent.outputs.template import render, templates
from agent.outputs.writer import DeviceWriter


class Output:
    """One output: how a check-in becomes text, and the writer thread that delivers it."""

    def __init__(self, cfg, writer: DeviceWriter):
        self.cfg, self.writer = cfg, writer

    def text(self, kind: str, card: dict[str, Any], raw: str) -> str | None:
        template = templates(self.cfg).get(kind)
        if template is None:
            return None            # only BHYT and CCCD check-ins are typed
        return self.cfg.prefix + render(template, card, raw) + self.cfg.suffix

    def send(self, kind: str, card: dict[str, Any], raw: str) -> None:
        text = self.text(kind, card, raw)
        if text:
            self.writer.send(text)


class KeyboardWriter(DeviceWriter):
    """Types a line as key reports. A character its layout has no key for (a Vietnamese letter in an
    opaque field of a BHYT code, say) is left out and the rest typed, and the line is recorded as
    typed short until IT acknowledges it: never dropped whole for one letter, never typed as
    anything the template did not ask for (only characters are removed, no key is added)."""

    def __init__(self, device: str, layout: str, mode: str, **kw):
        encode = hid.encode_alt_numpad if mode == "alt_numpad" else hid.encode
        super().__init__("keyboard", device, lambda text: encode(text, layout), **kw)
        self.layout = layout

    def _prepare(self, text: str) -> tuple[str, str]:
        return hid.split_typeable(text, self.layout)


class SerialWriter(DeviceWriter):
    """A tty gets raw mode and the configured speed when opened (a FIFO or the gadget: as it is)."""

    def __init__(self, device: str, baud: int, **kw):
        super().__init__("serial", device, lambda text: [text.encode("utf-8")], **kw)
        self.baud = baud

    def _open(self) -> int:
        new = self._fd is None
        fd = super()._open()
        if new and os.isatty(fd):
            attrs = termios.tcgetattr(fd)
            attrs[0] = attrs[1] = attrs[3] = 0                       # raw: no translation, no echo
            attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
            speed = getattr(termios, f"B{self.baud}", termios.B115200)
            attrs[4] = attrs[5] = speed
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        return fd


def make_outputs(cfg: Config, *, records: bool = True) -> list[Output]:
    """The enabled outputs. `records`: each keeps what it did not deliver as read in the state
    directory until IT acknowledges it (the station); `output test` keeps nothing."""
    def kept(kind: str) -> dict[str, Any]:
        return {"record_path": paths.output_record(cfg.station.state_dir, kind) if records else None}

    outs = []
    k = cfg.keyboard
    if k.enabled:
        outs.append(Output(k, KeyboardWriter(k.device, k.layout, k.mode, timeout_s=k.timeout_s,
                                             delay_s=k.key_delay_ms / 1000 / 2, **kept("keyboard"))))
    s = cfg.serial
    if s.enabled:
        outs.append(Output(s, SerialWriter(s.device, s.baud, timeout_s=s.timeout_s, **kept("serial"))))
    return outs
