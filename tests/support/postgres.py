"""A real PostgreSQL for tests: a private cluster (Debian's postgresql binaries) in a temporary
folder, on a free loopback port, run as the 'postgres' user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from support.broker import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: install Debian's 'postgresql' (.ci/run does)")
    return found[-1]


class Postgres:
    def __init__(self, folder: Path):
        self.folder = folder
        self.data = folder / "pgdata"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _as_postgres(self) -> dict:
        if os.geteuid() != 0:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def start(self) -> "Postgres":
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for p in (self.folder, *self.folder.parents):
                if p == Path("/") or p == Path("/tmp"):
                    break
                os.chmod(p, os.stat(p).st_mode | 0o011)   # let postgres walk into the test's folder
            shutil.chown(self.folder, user.pw_uid, user.pw_gid)
        if not self.data.exists():
            subprocess.run([_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                            "--no-sync"], check=True, capture_output=True, **self._as_postgres())
        self.proc = subprocess.Popen([_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                                      "-k", str(self.folder), "-c", "fsync=off"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self._as_postgres())
        deadline = time.time() + 30
        import psycopg
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.proc.stderr.read().decode()[-500:]}")
            try:
                psycopg.connect(self.dsn, connect_timeout=1).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise RuntimeError("postgres did not start")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def restart(self) -> None:
        """Stop (SIGTERM: every client connection is closed) and start again on the same data and port."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """A fast shutdown (SIGINT, as `pg_ctl stop` and systemd do): sessions are closed, not waited for."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(20)
        self.proc = None


def consumer_waits_behind(dsn: str, statement: str, name: str = "ddl-2", timeout: float = 5.0) -> bool:
    """Does a reference consumer starting now wait behind another client's open transaction that
    has run `statement` (a report reading checkins, a HIS clean-up writing to a table)? Its
    start-up DDL must take no lock that waits (ALTER TABLE, CREATE INDEX would)."""
    import threading

    import psycopg

    from examples.consumer.consumer import Consumer

    holder = psycopg.connect(dsn)
    try:
        holder.execute(statement)
        made: list = []
        t = threading.Thread(target=lambda: made.append(Consumer("127.0.0.1", 9, dsn, name=name)), daemon=True)
        t.start()
        t.join(timeout)
        waited = t.is_alive()
        holder.rollback()
        t.join(10)
        if made:
            made[0].db.close()
        return waited
    finally:
        holder.close()
