"""The real PC/SC path for tests: a private pcscd with vsmartcard's virtual reader (vpcd), and a
relay that plays any card object (`transmit(apdu) -> bytes`, the simulated chip later) to it.

vpcd's protocol, from vsmartcard's source (frankmorgner/vsmartcard, virtualsmartcard/src/vpcd/
vpcd.h and vpcd.c; the Python side in src/vpicc/virtualsmartcard/VirtualSmartcard.py, run()):
TCP; with `DEVICENAME /dev/null:PORT` in reader.conf the driver listens on PORT for slot 0 and
PORT+1 for slot 1 (ifd-vpcd.c: Channel+slot; bound to INADDR_ANY), and the virtual card
connects. Every message is a 2-byte big-endian length and that many bytes (sendToVICC /
recvFromVICC). A 1-byte message is a control: 0 power off, 1 power on, 2 reset (none
answered), 4 "send the ATR" (answered with the ATR); any other message is a command APDU,
answered with the response APDU. pcscd polls the card's presence by asking for the ATR; a
closed connection is a removed card (vicc_eject).

The private pcscd does not touch a system one: it runs in its own mount namespace with a tmpfs
over /run (so it sees no udev, hence no USB reader) and its /run/pcscd bound to a test folder;
this process reaches it through PCSCLITE_CSOCK_NAME, which libpcsclite reads once per process:
so one pcscd per test process (the fixture is session-scoped), on a free port pair. In a chroot
(scripts/test-arm64's root), whose "/" is no mount, unshare cannot make mounts private: there
pcscd takes the root's own /run/pcscd, which nothing else uses (the tests fail, saying so, if a
pcscd runs there already).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
#: a contactless ISO 14443-4 card's ATR as PC/SC readers build it (PC/SC part 3, 3.1.3.2.3):
#: 3B 8n 80 01, no historical bytes, TCK
ATR = bytes.fromhex("3B80800101")
CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)   # PR_SET_PDEATHSIG


def _free_port_pair() -> int:
    """A port P with P and P+1 free on every interface (vpcd binds INADDR_ANY, two slots)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            try:
                with socket.socket() as b:
                    b.bind(("", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for vpcd")


class Pcscd:
    """A private pcscd whose only readers are vpcd's two slots on `port` and `port + 1`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.run_dir, self.conf_dir = folder / "run", folder / "reader.conf.d"
        self.socket = self.run_dir / "pcscd.comm"
        self.log = folder / "pcscd.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def reader(self) -> str:
        """Slot 0's name as PC/SC lists it."""
        return "Virtual PCD 00 00"

    def start(self) -> "Pcscd":
        pcscd = shutil.which("pcscd") or ("/usr/sbin/pcscd" if Path("/usr/sbin/pcscd").exists() else None)
        unshare = shutil.which("unshare")
        if pcscd is None or not VPCD_DRIVER.exists():
            pytest.fail("the PC/SC tests need pcscd and vsmartcard's vpcd driver: "
                        "apt-get install pcscd vsmartcard-vpcd (.ci/run installs them)")
        if unshare is None:
            pytest.fail("the PC/SC tests need unshare (util-linux) for a private pcscd")
        private = [unshare, "--mount", "--propagation", "private"]
        if os.geteuid() != 0:
            private.insert(1, "--map-root-user")
        probe = subprocess.run([*private, "true"], capture_output=True, text=True)
        shared_run = probe.returncode != 0
        if shared_run:
            # a chroot (scripts/test-arm64's root) has no mount of its own at "/", so no private
            # namespace: pcscd takes the root's own /run/pcscd, where nothing else runs
            if "propagation" not in probe.stderr:
                pytest.fail(f"no private mount namespace for pcscd: {probe.stderr.strip()}")
            self.socket = Path("/run/pcscd/pcscd.comm")
            pid = Path("/run/pcscd/pcscd.pid")
            if self.socket.exists() and pid.exists() and Path(f"/proc/{pid.read_text().strip()}").exists():
                pytest.fail("a pcscd already runs on /run/pcscd, and this machine gives the tests no private "
                            f"one ({probe.stderr.strip()}): stop it for the PC/SC tests")
        if os.environ.get("PCSCLITE_CSOCK_NAME", str(self.socket)) != str(self.socket):
            pytest.fail("PCSCLITE_CSOCK_NAME already points elsewhere in this process: one pcscd per process")
        os.environ["PCSCLITE_CSOCK_NAME"] = str(self.socket)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        errors = []
        for _ in range(3):                      # a port taken between the check and pcscd's bind
            self.port = _free_port_pair()
            (self.conf_dir / "vpcd").write_text(
                f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{self.port}\n'
                f"LIBPATH {VPCD_DRIVER}\nCHANNELID {self.port}\n")
            for stale in self.run_dir.iterdir():
                stale.unlink()
            run = [pcscd, "--foreground", "--info", "--config", str(self.conf_dir)]
            if not shared_run:
                inner = ('mount -t tmpfs tmpfs /run && mkdir /run/pcscd && mount --bind "$1" /run/pcscd '
                         '&& shift && exec "$@"')
                run = [*private, "sh", "-c", inner, "sh", str(self.run_dir), *run]
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(run, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             preexec_fn=_die_with_parent)
            why = self._wait_ready(10.0)
            if why is None:
                return self
            errors.append(why)
            self.stop()
        pytest.fail("the private pcscd with vpcd did not start: " + " / ".join(errors))

    def _wait_ready(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"pcscd exited with {self.proc.returncode}: {self.log_tail()}"
            text = self.log.read_text(errors="replace")
            if "daemon ready" in text and self.socket.exists():
                if f"port {self.port}" in text and "Could not" not in text and self._listening():
                    return None
                return f"vpcd did not listen on port {self.port}: {self.log_tail()}"
            time.sleep(0.05)
        return f"pcscd not ready within {timeout_s:g} s: {self.log_tail()}"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def card_present(self) -> bool:
        """Whether pcscd sees a card in slot 0 now (it polls vpcd a few times a second)."""
        from smartcard import scard as s
        rc, ctx = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        assert rc == s.SCARD_S_SUCCESS, s.SCardGetErrorMessage(rc)
        try:
            rc, states = s.SCardGetStatusChange(ctx, 0, [(self.reader, s.SCARD_STATE_UNAWARE)])
            assert rc == s.SCARD_S_SUCCESS, s.SCardGetErrorMessage(rc)
            return bool(states[0][1] & s.SCARD_STATE_PRESENT)
        finally:
            s.SCardReleaseContext(ctx)

    def wait_card(self, present: bool, timeout_s: float = 10.0) -> None:
        """Until pcscd has seen the card come (present) or go: a person's hand is never faster."""
        deadline = time.monotonic() + timeout_s
        while self.card_present() != present:
            assert time.monotonic() < deadline, f"pcscd still sees present={not present}: {self.log_tail()}"
            time.sleep(0.05)

    def log_tail(self, n: int = 600) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:].strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class VpcdRelay:
    """Plays `card` (transmit(apdu) -> bytes) as the virtual card in vpcd's slot on `port`.

    The card raising an exception (the simulated chip's CardLost when lifted), lift() and stop()
    close the connection: to pcscd the card was removed. `apdus` records what reached the card."""

    def __init__(self, port: int, card, *, atr: bytes = ATR, host: str = "127.0.0.1"):
        self.port, self.card, self.atr, self.host = port, card, atr, host
        self.apdus: list[bytes] = []
        self.controls: list[int] = []
        self.error: BaseException | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "VpcdRelay":
        self._sock = socket.create_connection((self.host, self.port), timeout=5)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._thread = threading.Thread(target=self._serve, name=f"vpcd-relay-{self.port}", daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            # vpcd writes the length and the payload in two sends: without an immediate ACK of
            # the first, Nagle holds the second for the peer's delayed ACK (40 ms an APDU)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self) -> None:
        sock = self._sock

        def send(payload: bytes) -> None:
            sock.sendall(struct.pack("!H", len(payload)) + payload)
        try:
            while True:
                head = self._recv_exact(sock, 2)
                if head is None:
                    return
                msg = self._recv_exact(sock, struct.unpack("!H", head)[0])
                if msg is None:
                    return
                if len(msg) == 1:
                    self.controls.append(msg[0])
                    if msg[0] == CTRL_ATR:
                        send(self.atr)
                    continue
                self.apdus.append(msg)
                try:
                    answer = self.card.transmit(msg)
                except Exception as e:   # noqa: BLE001 - the card left: close the link
                    self.error = e
                    return
                send(answer)
        except OSError:
            return
        finally:
            self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def lift(self) -> None:
        """The card leaves the field: the connection closes."""
        self._close()

    stop = lift

    def __enter__(self) -> "VpcdRelay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture(scope="session")
def _pcscd_session(tmp_path_factory):
    d = Pcscd(tmp_path_factory.mktemp("pcscd")).start()
    yield d
    d.stop()


@pytest.fixture
def pcscd_vpcd(_pcscd_session):
    """A private pcscd with a vpcd reader for this test process (see the module's docstring),
    its slot empty at the start of the test (an earlier test's card seen gone)."""
    _pcscd_session.wait_card(present=False)
    return _pcscd_session
