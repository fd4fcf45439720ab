"""A small local control socket for the running daemon (runtime directory, mode 0660).

Protocol: the client sends one command line ("snapshot"); the daemon answers
"OK <length>\n" followed by that many bytes, or "ERR <message>\n".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)
MAX_COMMAND = 64


class ControlServer:
    def __init__(self, path: Path, handlers: dict[str, Callable[[], bytes]]):
        self.path, self.handlers = path, handlers
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)

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
        sock.listen(4)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._sock:
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    command = conn.recv(MAX_COMMAND).decode("ascii", "replace").strip()
                    handler = self.handlers.get(command)
                    if handler is None:
                        conn.sendall(f"ERR unknown command {command[:20]!r}\n".encode())
                        continue
                    data = handler()
                    conn.sendall(f"OK {len(data)}\n".encode() + data)
                except Exception as exc:  # noqa: BLE001 - a bad client never hurts the station
                    log.warning("control socket: %s", exc)
                    try:
                        conn.sendall(f"ERR {str(exc)[:200]}\n".encode())
                    except OSError:
                        pass


def request(path: Path, command: str, timeout: float = 10.0) -> bytes:
    """Send a command to the daemon; returns the payload or raises OSError / RuntimeError."""
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
        head, rest = buf.split(b"\n", 1)
        if head.startswith(b"ERR"):
            raise RuntimeError(head[4:].decode(errors="replace"))
        size = int(head.split()[1])
        while len(rest) < size:
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("short answer from the daemon")
            rest += chunk
        return rest[:size]
