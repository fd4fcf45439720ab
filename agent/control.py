"""A small local control socket for the running daemon (runtime directory, mode 0660).

Protocol: the client sends one command line ("snapshot": a JPEG; "status": the daemon's state as
JSON, from memory, for `scanner-agent status` when its status file cannot be written); the daemon answers
"OK <length>\n" followed by that many bytes, or "ERR <message>\n".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from agent.worker import Worker

log = logging.getLogger(__name__)
MAX_COMMAND = 64
MAX_CLIENTS = 8
DEADLINE_S = 5.0      # a client has this long to send its command, and to take the answer


class ControlServer(Worker):
    """Accepts on the socket in a supervised worker; each client is served on a short-lived thread
    of its own with a deadline and a size cap, so idle or slow clients never block the others."""

    stall_s = 60.0

    def __init__(self, path: Path, handlers: dict[str, Callable[[], bytes]]):
        super().__init__("control")
        self.path, self.handlers = path, handlers
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def start(self) -> "ControlServer":
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # created 0660: the service user and its group only
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        super().start()
        return self

    def finish(self) -> None:
        if self._sock:
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def work(self) -> None:
        while not self.stopping.is_set():
            self.beat()
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            if not self._slots.acquire(blocking=False):
                with conn:
                    _answer(conn, b"ERR busy: too many clients, try again\n")
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                command = _read_command(conn, time.monotonic() + DEADLINE_S)
                if command is None:
                    _answer(conn, b"ERR expected one command line of at most %d bytes\n" % MAX_COMMAND)
                    return
                handler = self.handlers.get(command)
                if handler is None:
                    _answer(conn, f"ERR unknown command {command[:20]!r}\n".encode())
                    return
                try:
                    data = handler()
                except Exception as exc:  # noqa: BLE001 - a failing handler never hurts the station
                    log.warning("control socket: %s failed: %s", command, exc)
                    _answer(conn, f"ERR {str(exc)[:200]}\n".encode("utf-8", "replace"))
                    return
                _answer(conn, f"OK {len(data)}\n".encode() + data)
        finally:
            self._slots.release()


def _read_command(conn: socket.socket, deadline: float) -> str | None:
    """One line, possibly arriving in several writes; None if too long, garbled or too late."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or len(buf) > MAX_COMMAND:
            return None
        conn.settimeout(left)
        try:
            chunk = conn.recv(MAX_COMMAND + 1 - len(buf))
        except OSError:
            return None
        if not chunk:
            break  # the client closed its side: what came is the command
        buf += chunk
    line = buf.split(b"\n", 1)[0].strip()
    if len(line) > MAX_COMMAND or not line:
        return None
    return line.decode("ascii", "replace")


def _answer(conn: socket.socket, data: bytes) -> None:
    try:
        conn.settimeout(DEADLINE_S)
        conn.sendall(data)
    except OSError:
        pass


def request(path: Path, command: str, timeout: float = 10.0, max_bytes: int = 64 << 20) -> bytes:
    """Send a command to the daemon; returns the payload or raises OSError / RuntimeError (an
    answer larger than `max_bytes` too: the socket's peer is not trusted blindly)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("daemon closed the connection")
            buf += chunk
            if b"\n" not in buf and len(buf) > 4096:
                raise RuntimeError("no answer line from the daemon")
        head, rest = buf.split(b"\n", 1)
        if head.startswith(b"ERR"):
            raise RuntimeError(head[4:].decode(errors="replace"))
        size = int(head.split()[1])
        if size > max_bytes:
            raise RuntimeError(f"answer of {size} bytes is larger than {max_bytes}")
        while len(rest) < size:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("short answer from the daemon")
            rest += chunk
        return rest[:size]
