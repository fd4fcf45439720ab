"""The control socket (agent/control.py): clients served concurrently with a deadline, idle
clients never keep a snapshot waiting, and a request never connects through a link."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.control import request


# --- 11: the control socket -----------------------------------------------------------------------

def test_control_socket_serves_clients_concurrently_with_a_deadline(tmp_path):
    from agent.control import ControlServer, request

    server = ControlServer(tmp_path / "c.sock", {"snapshot": lambda: b"JPEG"}).start()
    idle = []
    try:
        for _ in range(3):                                  # three clients that never say anything
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(tmp_path / "c.sock"))
            idle.append(s)
        t0 = time.time()
        assert request(tmp_path / "c.sock", "snapshot", timeout=3) == b"JPEG"
        assert time.time() - t0 < 1.0
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:   # a command in two writes
            s.connect(str(tmp_path / "c.sock"))
            s.sendall(b"snap")
            time.sleep(0.2)
            s.sendall(b"shot\n")
            assert s.recv(64).startswith(b"OK 4\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:   # an endless line is cut off
            s.connect(str(tmp_path / "c.sock"))
            s.sendall(b"x" * 10_000)
            assert s.recv(64).startswith(b"ERR expected one command line")
    finally:
        for s in idle:
            s.close()
        server.stop()
    assert not (tmp_path / "c.sock").exists()


def test_idle_clients_never_keep_it_from_a_snapshot(tmp_path):
    """Eight idle local clients made `snapshot` answer busy forever (each held one of the eight
    slots until its deadline, and the attacker opened a new one as each closed). A client that
    has sent its command is served first; idle ones wait in a pool of their own, the oldest
    dropped when it is full, and time out."""
    from agent.control import ControlServer, request

    path = tmp_path / "c.sock"
    server = ControlServer(path, {"snapshot": lambda: b"JPEG"}).start()
    stop = threading.Event()
    held: list[socket.socket] = []

    def attacker() -> None:                         # keeps 40 silent clients connected, reopening any dropped
        while not stop.is_set():
            for s in list(held):
                try:
                    if s.recv(64, socket.MSG_DONTWAIT) == b"":
                        raise OSError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                s.close()
                held.remove(s)
            while len(held) < 40:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(path))
                except OSError:
                    s.close()
                    break
                held.append(s)
            time.sleep(0.01)
    t = threading.Thread(target=attacker, daemon=True)
    t.start()
    try:
        time.sleep(0.5)
        answers = []
        for _ in range(4):
            t0 = time.time()
            try:
                answers.append((request(path, "snapshot", timeout=3), time.time() - t0))
            except RuntimeError as exc:
                answers.append((str(exc).encode(), time.time() - t0))
            time.sleep(0.7)
        assert all(a == b"JPEG" and took < 1.0 for a, took in answers), answers
    finally:
        stop.set()
        t.join(5)
        for s in held:
            s.close()
        server.stop()


def test_control_request_never_connects_through_a_link(tmp_path):
    real = tmp_path / "other-program.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(real))
    srv.listen()
    srv.settimeout(0.5)
    got: list[bytes] = []

    def serve():
        try:
            conn, _ = srv.accept()
            got.append(conn.recv(64))
            conn.sendall(b"OK 2\n{}")
            conn.close()
        except OSError:
            pass

    state = tmp_path / "state"
    state.mkdir()
    (state / "control.sock").symlink_to(real)
    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises(OSError):
        request(state / "control.sock", "status", timeout=1)
    t.join()
    assert got == []                                     # the other program heard nothing
    t = threading.Thread(target=serve)
    t.start()
    assert request(real, "status", timeout=1) == b"{}"   # the socket itself still answers
    t.join()
    srv.close()
