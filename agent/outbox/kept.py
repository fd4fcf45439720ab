"""The daemon's look into a damaged outbox file kept beside the live one: is every undelivered
check-in it can hold already in the outbox (then it is no fault), or must IT import it?

The file is read off the caller's thread, one file at a time, within SETTLE_S: the callers are the
camera loop (status, fault signal), the MQTT thread (health) and the control socket, and a file
that takes long to read (large, damaged in many places, or made to be slow) must never hold them
up, nor SIGTERM. A caller waits at most SETTLE_WAIT_S, once, so a small file is settled at once; a
file not read yet, or not read in full in time, stays a fault (IT's `queue import` reads it all).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: the most one look into a kept file reads it; what is not read by then keeps it a fault
SETTLE_S = 60.0
#: the most a caller waits for a look it started (the camera loop's status write, say)
SETTLE_WAIT_S = 1.0
_ONE_AT_A_TIME = threading.Lock()


@dataclass
class KeptCheck:
    """One look into one version of a kept file: `done` once read; then `complete` (every
    undelivered row it holds was read) and the `ids` read; `said` once the log said it is settled."""
    path: Path
    max_rows: int
    done: threading.Event = field(default_factory=threading.Event)
    complete: bool = False
    ids: list[str] = field(default_factory=list)
    said: bool = False

    def start(self) -> KeptCheck:
        threading.Thread(target=self._read, name="outbox-kept-check", daemon=True).start()
        return self

    def ready(self, wait: float) -> bool:
        return self.done.wait(wait)

    def _read(self) -> None:
        from agent.outbox.salvage import salvage

        try:
            with _ONE_AT_A_TIME:
                found = salvage(self.path, deadline_s=SETTLE_S, max_rows=self.max_rows)
            self.complete, self.ids = found.complete and not found.error, [r.id for r in found.rows]
            if found.stopped:
                log.warning("outbox: damaged file %s not read in full (%s); it stays a fault until "
                            "'scanner-agent queue import %s'", self.path, found.stopped, self.path)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be read stays a fault, never a crash
            log.warning("outbox: damaged file %s could not be read: %s: %s", self.path, type(exc).__name__, exc)
        finally:
            self.done.set()
