"""A small local control socket for the running daemon (runtime directory, mode 0660).

Protocol: the client sends one command line ("snapshot": a JPEG; "status": the daemon's state as
JSON, from memory, for `scanner-agent status` when its status file cannot be written; "output_ack":
`scanner-agent output ack`, what was acknowledged as a JSON list); the daemon answers
"OK <length>\n" followed by that many bytes, or "ERR <message>\n".
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Callable

from agent.worker import Worker

log = logging.getLogger(__name__)
MAX_COMMAND = 64
MAX_CLIENTS = 8       # commands being answered at once (a snapshot is real work)
MAX_WAITING = 64      # connected clients that have not sent their command yet
COMMAND_S = 2.0       # a client has this long to send its command (request() sends it at once)
DEADLINE_S = 5.0      # and this long to take the answer


class ControlServer(Worker):
    """Accepts on the socket in a supervised worker. A client costs nothing until its command
    line is in: the worker reads commands itself (non-blocking, one selector), serving clients that
    have sent one before accepting new ones; clients that say nothing wait in a pool of their own
    (the oldest dropped when it is full) and are dropped after COMMAND_S. Only a complete command
    takes one of the MAX_CLIENTS slots, answered on a short-lived thread with a deadline: idle or
    slow local clients cannot keep IT from a snapshot."""

    stall_s = 60.0

    def __init__(self, path: Path, handlers: dict[str, Callable[[], bytes]]):
        super().__init__("control")
        self.path, self.handlers = path, handlers
        self._sock: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._waiting: dict[socket.socket, tuple[float, bytes]] = {}   # conn -> (deadline, bytes so far)

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
        sock.setblocking(False)
        self._sock = sock
        super().start()
        return self

    def finish(self) -> None:
        for conn in list(self._waiting):
            conn.close()
        self._waiting.clear()
        if self._sock:
            self._sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def work(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            try:
                while not self.stopping.is_set():
                    self.beat()
                    ready = [key.fileobj for key, _ in sel.select(timeout=0.2)]
                    for conn in ready:              # clients with a command first
                        if conn is not self._sock:
                            self._read(sel, conn)
                    if self._sock in ready:
                        self._accept(sel)
                    self._expire(sel, time.monotonic())
            finally:
                for conn in list(self._waiting):
                    self._drop(sel, conn)

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(MAX_WAITING):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # out of descriptors, say: the next round tries again
                log.warning("control socket: accept failed: %s", exc)
                return
            if len(self._waiting) >= MAX_WAITING:   # the oldest silent client makes room
                oldest = min(self._waiting, key=lambda c: self._waiting[c][0])
                self._drop(sel, oldest, b"ERR dropped: too many clients waiting without a command\n")
            conn.setblocking(False)
            self._waiting[conn] = (time.monotonic() + COMMAND_S, b"")
            sel.register(conn, selectors.EVENT_READ)

    def _read(self, sel: selectors.BaseSelector, conn: socket.socket) -> None:
        if conn not in self._waiting:
            return
        deadline, buf = self._waiting[conn]
        try:
            chunk = conn.recv(MAX_COMMAND + 1 - len(buf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        buf += chunk
        if chunk and b"\n" not in buf and len(buf) <= MAX_COMMAND:
            self._waiting[conn] = (deadline, buf)
            return
        del self._waiting[conn]
        sel.unregister(conn)
        self._dispatch(conn, _command(buf))

    def _expire(self, sel: selectors.BaseSelector, now: float) -> None:
        for conn in [c for c, (deadline, _) in self._waiting.items() if deadline <= now]:
            self._drop(sel, conn, b"ERR expected one command line of at most %d bytes\n" % MAX_COMMAND)

    def _drop(self, sel: selectors.BaseSelector, conn: socket.socket, message: bytes = b"") -> None:
        self._waiting.pop(conn, None)
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        with conn:
            if message:
                _answer(conn, message, timeout=0.05)

    def _dispatch(self, conn: socket.socket, command: str | None) -> None:
        if command is None or command not in self.handlers:
            with conn:
                _answer(conn, b"ERR expected one command line of at most %d bytes\n" % MAX_COMMAND if command is None
                        else f"ERR unknown command {command[:20]!r}\n".encode(), timeout=0.05)
            return
        if not self._slots.acquire(blocking=False):
            with conn:
                _answer(conn, b"ERR busy: too many clients, try again\n", timeout=0.05)
            return
        threading.Thread(target=self._serve, args=(conn, command), name="control-client", daemon=True).start()

    def _serve(self, conn: socket.socket, command: str) -> None:
        try:
            with conn:
                try:
                    data = self.handlers[command]()
                except Exception as exc:  # noqa: BLE001 - a failing handler never hurts the station
                    log.warning("control socket: %s failed: %s", command, exc)
                    _answer(conn, f"ERR {str(exc)[:200]}\n".encode("utf-8", "replace"))
                    return
                _answer(conn, f"OK {len(data)}\n".encode() + data)
        finally:
            self._slots.release()


def _command(buf: bytes) -> str | None:
    """The command line from what a client sent; None if too long, empty or garbled."""
    line = buf.split(b"\n", 1)[0].strip()
    if len(line) > MAX_COMMAND or not line or (b"\n" not in buf and len(buf) > MAX_COMMAND):
        return None
    return line.decode("ascii", "replace")


def _answer(conn: socket.socket, data: bytes, timeout: float = DEADLINE_S) -> None:
    try:
        conn.settimeout(timeout)
        conn.sendall(data)
    except OSError:
        pass


def _connect_own(s: socket.socket, path: Path) -> None:
    """Connect to the socket at `path` without following a link: `status` and `snapshot` run as
    root, and the state directory is the service account's, which could put a link to another
    program's socket there. The socket is pinned with O_PATH | O_NOFOLLOW and reached through its
    /proc/self/fd entry, so it cannot be swapped between the check and the connect."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)   # a link: ELOOP
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a socket")
        pinned = f"/proc/self/fd/{fd}"
        s.connect(pinned if os.path.exists(pinned) else str(path))
    finally:
        os.close(fd)


def request(path: Path, command: str, timeout: float = 10.0, max_bytes: int = 64 << 20) -> bytes:
    """Send a command to the daemon; returns the payload or raises OSError / RuntimeError (an
    answer larger than `max_bytes` too: the socket's peer is not trusted blindly)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        _connect_own(s, Path(path))
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
