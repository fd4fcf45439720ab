"""A real Mosquitto broker for tests, on a free loopback port: with a generated config (Broker),
or from the integrators' guide's samples in examples/mosquitto (SampleBroker)."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from support import wait

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_ca(folder: Path, name: str) -> dict[str, Path]:
    """A test CA and a server certificate for 127.0.0.1 / localhost, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = folder / f"{name}-ca.key", folder / f"{name}-ca.crt"
    key, csr, crt = folder / f"{name}-server.key", folder / f"{name}-server.csr", folder / f"{name}-server.crt"
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "2",
        "-subj", f"/CN={name} test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
        "-days", "2", "-extfile", ext)
    return {"ca": ca_crt, "cert": crt, "key": key}


def link_config(port: int, **kw):
    """The station's [mqtt] for a test broker on this machine (plain, fast keepalive and health)."""
    from agent.config import MqttConfig

    return MqttConfig(**{"host": "127.0.0.1", "port": port, "tls": False, "allow_insecure": True,
                         "keepalive_s": 5, "health_interval_s": 1, **kw})


class Broker:
    def __init__(self, folder: Path, *, tls: dict | None = None, users: dict[str, str] | None = None,
                 acl: str | None = None, max_queued: int = 100000, extra: tuple[str, ...] = ()):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.started = False
        # As root, mosquitto would drop to the 'mosquitto' user, which cannot write to the test's
        # private folder (no persistence, no log): tell it to stay the user running the tests.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 f"log_dest file {folder}/mosquitto.log", "log_type all", f"max_queued_messages {max_queued}"]
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        if acl:
            (folder / "acl").write_text(acl)
            lines += [f"acl_file {folder / 'acl'}"]
        lines += list(extra)   # more settings, e.g. ("message_size_limit 2048",)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode()
                log = self.folder / "mosquitto.log"
                err += log.read_text(errors="replace")[-500:] if log.exists() else ""
                if "Address already in use" in err and not self.started:
                    # the free port was taken meanwhile (tests run on parallel workers): another one,
                    # only on the first start (a restart keeps the port its clients know)
                    log.unlink(missing_ok=True)
                    old, self.port = self.port, free_port()
                    self.conf.write_text(self.conf.read_text().replace(f"listener {old} ", f"listener {self.port} "))
                    return self.start()
                raise RuntimeError(f"mosquitto exited: {err[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            # the port answers; ours only once our mosquitto says it runs (another worker's broker
            # may have taken the port first: ours then exits with "Address already in use")
            if self.proc.poll() is None and self._running():
                self.started = True
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def _running(self) -> bool:
        log = self.folder / "mosquitto.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.rfind(" running") > text.rfind(" starting")   # this start's, not a previous one's

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence (sessions, queued messages) and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A consumer with a persistent session, as the hospital's would be: collects every message."""

    def __init__(self, port: int, topic: str, client_id: str = "test-consumer", *, tls_ca: Path | None = None,
                 auth: tuple[str, str] | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        if auth:
            self.client.username_pw_set(*auth)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        self.subscribed = self.wait_for(lambda: self.client.is_connected(), 5)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def json_on(self, suffix: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    wait_for = staticmethod(wait.wait_for)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class SampleBroker:
    """Mosquitto run from the guide's own samples (examples/mosquitto: mosquitto.conf with its TLS
    listener, the ACL, make-passwd.sh), only the paths and the port changed for the test. `extra`:
    more configuration after the sample's (a bridge: bridge_config). Restartable on its port."""

    def __init__(self, folder: Path, stations: list[str], acl: str | None = None, extra: str = ""):
        folder.mkdir(parents=True)
        self.folder = folder
        sample = ROOT / "examples" / "mosquitto"
        self.ca = make_ca(folder, "sample")
        made = subprocess.run([str(sample / "make-passwd.sh"), str(folder / "passwd"), *stations],
                              capture_output=True, text=True, check=True)
        self.passwords = dict(line.split("\t") for line in made.stdout.splitlines())
        (folder / "acl").write_text(acl if acl is not None else (sample / "acl").read_text())
        self.port = free_port()
        conf = (sample / "mosquitto.conf").read_text()
        for old, new in (("listener 8883", f"listener {self.port} 127.0.0.1"),
                         ("/etc/mosquitto/certs/hospital-ca.crt", str(self.ca["ca"])),
                         ("/etc/mosquitto/certs/broker.hospital.lan.crt", str(self.ca["cert"])),
                         ("/etc/mosquitto/certs/broker.hospital.lan.key", str(self.ca["key"])),
                         ("/etc/mosquitto/scanner-agent.passwd", str(folder / "passwd")),
                         ("/etc/mosquitto/scanner-agent.acl", str(folder / "acl"))):
            if old not in conf:
                raise AssertionError(f"examples/mosquitto/mosquitto.conf no longer has {old!r}")
            conf = conf.replace(old, new)
        # (Debian's main mosquitto.conf sets persistence; DebianBroker runs the snippet under it)
        (folder / "mosquitto.conf").write_text(f"user {getpass.getuser()}\nlog_dest file {folder}/log\n"
                                               f"persistence true\npersistence_location {folder}/\n" + conf
                                               + extra)
        self.start()

    def start(self) -> "SampleBroker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.folder / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not Subscriber.wait_for(self._listening, 10):
            raise RuntimeError(f"the sample broker did not start: {(self.folder / 'log').read_text()[-500:]}")
        return self

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def bridge_config(self, site: str = "bridge-site2") -> str:
        """examples/mosquitto/bridge.conf for a site broker bridged to this one: its address, CA and
        the bridge user's password put in (the user must be among this broker's `stations`)."""
        conf = (ROOT / "examples" / "mosquitto" / "bridge.conf").read_text()
        for old, new in (("address broker.hospital.lan:8883", f"address 127.0.0.1:{self.port}"),
                         ("/etc/mosquitto/certs/hospital-ca.crt", str(self.ca["ca"])),
                         ("remote_password CHANGE-ME", f"remote_password {self.passwords[site]}"),
                         ("bridge-site2", site)):
            if old not in conf:
                raise AssertionError(f"examples/mosquitto/bridge.conf no longer has {old!r}")
            conf = conf.replace(old, new)
        return "\n" + conf

    def station_config(self, folder: Path, station: str, password: str, extra: str = "") -> Path:
        from support.daemon import config

        folder.mkdir(parents=True, exist_ok=True)
        conf = config(folder, folder / "state", station=station)
        conf.write_text(conf.read_text() + f"""
[mqtt]
host = "localhost"
port = {self.port}
ca_file = "{self.ca['ca']}"
username = "{station}"
password = "{password}"
health_interval_s = 1
{extra}
""")
        return conf

    def stop(self) -> None:
        """SIGTERM: the broker saves its sessions and queued messages, and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def debian_main_conf() -> str:
    """Debian's own /etc/mosquitto/mosquitto.conf as the installed package ships it: the file on
    this machine when it is unchanged (dpkg's md5 of the conffile), else the one in the package
    (the apt cache, or `apt-get download`). Fails with a clear message when neither is there."""
    import hashlib
    import os
    import tempfile

    def md5(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    q = subprocess.run(["dpkg-query", "-W", "-f=${Version}\n${Conffiles}\n", "mosquitto"], capture_output=True,
                       text=True)
    if q.returncode != 0:
        raise AssertionError("Debian's mosquitto package is not installed (apt-get install mosquitto; .ci/run does)")
    version, *conffiles = q.stdout.splitlines()
    wanted = next((line.split()[1] for line in conffiles if line.split()[:1] == ["/etc/mosquitto/mosquitto.conf"]),
                  None)
    assert wanted, "dpkg does not list /etc/mosquitto/mosquitto.conf as a conffile of mosquitto"
    installed = Path("/etc/mosquitto/mosquitto.conf")
    if installed.exists() and md5(installed.read_bytes()) == wanted:
        return installed.read_text()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    deb = Path("/var/cache/apt/archives") / f"mosquitto_{version.replace(':', '%3a')}_{arch}.deb"
    with tempfile.TemporaryDirectory() as tmp:
        if not deb.exists():
            os.chmod(tmp, 0o777)   # apt's download runs as the _apt user
            subprocess.run(["apt-get", "download", "-q", f"mosquitto={version}"], cwd=tmp, capture_output=True)
            found = list(Path(tmp).glob("mosquitto_*.deb"))
            if not found:
                raise AssertionError("/etc/mosquitto/mosquitto.conf was changed on this machine and the mosquitto "
                                     f"{version} package is neither in the apt cache nor downloadable")
            deb = found[0]
        data = subprocess.run(f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO ./etc/mosquitto/mosquitto.conf",
                              shell=True, capture_output=True, check=True).stdout
    assert md5(data) == wanted, f"{deb}: its mosquitto.conf is not the installed package's conffile"
    return data.decode()


class DebianBroker:
    """Mosquitto as the integrators' guide sets it up on stock Debian 12 / Raspberry Pi OS, in a
    temporary root: Debian's own main mosquitto.conf (its pid, persistence, log and include_dir
    paths moved into the temporary root), examples/mosquitto/mosquitto.conf in its conf.d, the ACL,
    the password file from make-passwd.sh and the certificates from make-ca.sh with the ownership
    they give. Started as root, the broker drops to the 'mosquitto' user, as on a real install.
    Listens on a free loopback port (a system broker may already own 1883)."""

    def __init__(self, stations: list[str], host: str = "localhost"):
        import os
        import pwd
        import tempfile

        assert os.geteuid() == 0, "DebianBroker runs mosquitto as root (it drops to 'mosquitto'): run the tests as root"
        user = pwd.getpwnam("mosquitto")
        self.root = Path(tempfile.mkdtemp(prefix="scanner-agent-debian-broker-"))
        os.chmod(self.root, 0o755)      # the broker, as 'mosquitto', must reach its files
        etc = self.root / "etc" / "mosquitto"
        for d in (etc / "conf.d", etc / "certs", self.root / "var" / "lib" / "mosquitto",
                  self.root / "var" / "log" / "mosquitto", self.root / "run" / "mosquitto"):
            d.mkdir(parents=True, mode=0o755, exist_ok=True)
            for p in [d, *d.parents]:
                if p == self.root:
                    break
                os.chmod(p, 0o755)
        for d in ("var/lib/mosquitto", "var/log/mosquitto", "run/mosquitto"):   # as the package makes them
            os.chown(self.root / d, user.pw_uid, user.pw_gid)
        main = debian_main_conf()
        for path in ("/run/mosquitto/", "/var/lib/mosquitto/", "/var/log/mosquitto/", "/etc/mosquitto/conf.d"):
            if path not in main:
                raise AssertionError(f"Debian's mosquitto.conf no longer has {path!r}")
            main = main.replace(path, f"{self.root}{path}")
        self.conf = etc / "mosquitto.conf"
        self.conf.write_text(main)
        sample = ROOT / "examples" / "mosquitto"
        self.port = free_port()
        snippet = (sample / "mosquitto.conf").read_text()
        for old, new in (("listener 8883", f"listener {self.port} 127.0.0.1"), ("/etc/mosquitto/", f"{etc}/"),
                         ("broker.hospital.lan", host)):
            if old not in snippet:
                raise AssertionError(f"examples/mosquitto/mosquitto.conf no longer has {old!r}")
            snippet = snippet.replace(old, new)
        (etc / "conf.d" / "scanner-agent.conf").write_text(snippet)
        (etc / "scanner-agent.acl").write_text((sample / "acl").read_text())
        os.chmod(etc / "scanner-agent.acl", 0o644)
        # the documented commands, as root
        subprocess.run([str(sample / "make-ca.sh"), str(etc / "certs"), host], check=True, capture_output=True)
        made = subprocess.run([str(sample / "make-passwd.sh"), str(etc / "scanner-agent.passwd"), *stations],
                              capture_output=True, text=True, check=True)
        self.passwords = dict(line.split("\t") for line in made.stdout.splitlines())
        self.ca = etc / "certs" / "hospital-ca.crt"
        self.log = self.root / "var" / "log" / "mosquitto" / "mosquitto.log"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the broker set up as the guide says did not start: {self.proc.stderr.read()}"
                                     f"{self.log.read_text()[-1500:] if self.log.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("the broker set up as the guide says does not listen")

    def user(self) -> str:
        """The user the broker process runs as."""
        import pwd
        uid = int(next(line.split()[1] for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
                       if line.startswith("Uid:")))
        return pwd.getpwuid(uid).pw_name

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
