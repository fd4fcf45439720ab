"""The configured chip reader (`[chip] reader`) as a Transport, for the station, `chip test` and
doctor: one factory, so the readers themselves (agent/chip/pcsc.py, pn532.py and their
`open_reader(kind, device, timeout_s)`, built apart) are imported only here, lazily, and a build
without them says so in one line instead of a traceback."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from agent.chip.transport import ChipError, Transport

#: where the readers' own factory may live (the first found wins)
FACTORY_MODULES = ("agent.chip.readers", "agent.chip.transport", "agent.chip.pcsc")


class ReaderMissing(ChipError):
    """The reader cannot be used: none configured, its support not installed, or it is absent."""


def _factory(name: str) -> Callable[..., Any] | None:
    for module in FACTORY_MODULES:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if callable(found):
            return found
    return None


def open_reader(cfg) -> Transport:
    """The reader of a ChipConfig as a Transport; ReaderMissing saying why when it cannot be had."""
    if cfg.reader == "none":
        raise ReaderMissing('no chip reader configured ([chip] reader = "none")')
    factory = _factory("open_reader")
    if factory is None:
        raise ReaderMissing(f"chip reader {cfg.reader!r}: this build has no reader support "
                            f"(agent/chip/{cfg.reader}.py is not installed)")
    try:
        return factory(cfg.reader, cfg.device or None, cfg.timeout_s)
    except ReaderMissing:
        raise
    except (ChipError, OSError, ImportError, ValueError) as exc:
        raise ReaderMissing(f"chip reader {cfg.reader!r}: {exc}") from exc


def reader_check(cfg) -> tuple[bool, str]:
    """(ok, one line) for doctor: the reader is there and answers; no card is needed. Uses the
    readers' own check when they have one, else opening the reader."""
    if cfg.reader == "none":
        return True, "chip reader: none configured (chip reading off)"
    check = _factory("reader_check")
    try:
        if check is not None:
            ok, line = check(cfg.reader, cfg.device or None, cfg.timeout_s)
            return bool(ok), f"chip reader: {line}"
        transport = open_reader(cfg)
    except ReaderMissing as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - doctor reports; it never crashes on a reader
        return False, f"chip reader {cfg.reader!r}: {type(exc).__name__}: {exc}"
    close = getattr(transport, "close", None)
    if callable(close):
        close()
    return True, f"chip reader {cfg.reader!r}: opened"
