"""Running it like an appliance: the systemd unit, the installer (in a temporary root), and the
IT commands against a real daemon in replay mode.

Also: the USB gadget unit's sandbox."""

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.broker import link_config
from support.daemon import cli
from support.wait import wait_for

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "systemd" / "install.sh"
UNIT = ROOT / "systemd" / "scanner-agent.service"


# --- systemd unit ---------------------------------------------------------------------------

def test_unit_has_the_required_settings():
    text = UNIT.read_text()
    for line in ["Type=notify", "WatchdogSec=", "Restart=always", "RestartSec=", "User=scanner-agent",
                 "SupplementaryGroups=video gpio audio", "StateDirectory=scanner-agent", "ConfigurationDirectory=scanner-agent",
                 "RuntimeDirectory=scanner-agent", "ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes",
                 "PrivateTmp=yes", "ProtectKernelTunables=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "CapabilityBoundingSet=\n", "DevicePolicy=closed", "DeviceAllow=char-video4linux rw",
                 "DeviceAllow=char-gpiochip rw", "DeviceAllow=char-alsa rw", "RestartPreventExitStatus=2"]:
        assert line in text, line


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: install Debian's 'systemd' package (.ci/run does)"
    # ExecStart must name an existing executable: point it at a stand-in with the same role
    exe = tmp_path / "scanner-agent"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "scanner-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/scanner-agent/venv/bin/scanner-agent", str(exe)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


# --- installer ------------------------------------------------------------------------------

#: pip builds the package in the source tree (build/, *.egg-info): two installs at once (tests on
#: parallel workers) broke each other's wheel, so they take turns on this lock
BUILD_LOCK = Path(tempfile.gettempdir()) / f"scanner-agent-build-{hashlib.sha1(bytes(ROOT)).hexdigest()[:12]}.lock"


def install(root, *args, check=True):
    env = {**os.environ, "SCANNER_AGENT_PIP_ARGS": "--no-deps"}  # dependencies are pip's business
    with open(BUILD_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(["bash", str(INSTALL), "--root", str(root), *args], capture_output=True, text=True,
                              env=env, timeout=300, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    first = install(root)
    return root, first


@pytest.mark.slow
def test_install_into_a_root(installed):
    root, first = installed
    assert "done" in first.stdout
    exe = root / "opt/scanner-agent/venv/bin/scanner-agent"
    assert subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.startswith("scanner-agent ")
    cfg = (root / "opt/scanner-agent/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg       # picamera2 from the OS
    assert (root / "etc/systemd/system/scanner-agent.service").read_text() == UNIT.read_text()
    conf = root / "etc/scanner-agent/config.toml"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert "useradd" not in first.stdout                     # no users made in a root install
    from agent.feedback.voice import PROMPTS                  # the default voice prompts, espeak-ng's
    assert sorted(p.stem for p in (root / "etc/scanner-agent/prompts").glob("*.wav")) == sorted(PROMPTS)
    assert "systemctl enable" in first.stdout and "skipped" in first.stdout
    # the docs run plain `scanner-agent`: the installer puts it on the PATH
    link = root / "usr/local/bin/scanner-agent"
    assert link.is_symlink() and os.readlink(link) == "/opt/scanner-agent/venv/bin/scanner-agent"


@pytest.mark.slow
def test_install_twice_changes_nothing(installed):
    root, _ = installed
    before = snapshot(root)
    again = install(root)
    assert "no changes" in again.stdout
    assert snapshot(root) == before


@pytest.mark.slow
def test_existing_config_is_never_overwritten(installed):
    root, _ = installed
    conf = root / "etc/scanner-agent/config.toml"
    conf.write_text("[station]\nid = \"counter-09\"\n")
    install(root)
    assert conf.read_text() == "[station]\nid = \"counter-09\"\n"


def test_dry_run_changes_nothing(tmp_path):
    proc = install(tmp_path / "fresh", "--dry-run")
    assert "would run: python3 -m venv" in proc.stdout and "dry run" in proc.stdout
    assert not any((tmp_path / "fresh").rglob("*"))


@pytest.mark.slow
def test_uninstall_keeps_state_and_config_unless_purged(tmp_path):
    root = tmp_path / "root"
    install(root)
    state = root / "var/lib/scanner-agent"
    state.mkdir(parents=True)
    (state / "outbox.db").write_text("undelivered check-ins")
    proc = install(root, "--uninstall")
    assert "kept" in proc.stdout
    assert not (root / "opt/scanner-agent").exists() and not (root / "etc/systemd/system/scanner-agent.service").exists()
    assert not (root / "usr/local/bin/scanner-agent").is_symlink()
    assert (state / "outbox.db").exists() and (root / "etc/scanner-agent/config.toml").exists()
    refused = install(root, "--uninstall", "--purge", check=False)  # no terminal, no --yes: refuse
    assert refused.returncode == 2 and (state / "outbox.db").exists()
    install(root, "--uninstall", "--purge", "--yes")
    assert not state.exists() and not (root / "etc/scanner-agent").exists()


# --- IT commands against a real daemon --------------------------------------------------------

@pytest.fixture
def daemon(tmp_path):
    frames = ROOT / "agent" / "samples" / "frames"
    conf = tmp_path / "config.toml"
    conf.write_text(f"""
[station]
id = "counter-it"
state_dir = "{tmp_path / 'state'}"
[camera]
source = "replay"
path = "{frames}"
fps = 15
[feedback]
backend = "none"
""")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", str(conf)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    status = tmp_path / "state" / "run" / "status.json"
    started = wait_for(lambda: status.exists() and json.loads(status.read_text())["counters"]["checkins"] >= 4, 90)
    if not started:
        proc.kill()
        pytest.fail(f"the station recorded fewer than 4 check-ins in 90 s: {proc.communicate(timeout=10)[1][-2000:]}")
    yield conf, proc
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_status_while_running_and_after_stop(daemon):
    conf, proc = daemon
    out = cli("status", "-c", str(conf), "--json")
    info = json.loads(out.stdout)
    assert info["daemon"] == "running" and info["station"] == "counter-it"
    assert info["camera"]["source"] == "replay" and info["camera"]["fault"] is None
    assert info["outbox"]["queue_depth"] >= 4 and info["outbox"]["oldest_undelivered_age_s"] >= 0
    assert info["mqtt"] == {"configured": False} and "clock_synced" in info and info["disk_free_mb"] > 0
    text = cli("status", "-c", str(conf)).stdout
    assert "daemon running" in text and "undelivered" in text
    proc.terminate()
    proc.wait(10)
    stopped = json.loads(cli("status", "-c", str(conf), "--json").stdout)
    assert stopped["daemon"] == "stopped" and stopped["outbox"]["queue_depth"] >= 4


@pytest.mark.slow
def test_queue_list_show_export_retry(daemon, tmp_path):
    conf, proc = daemon
    listed = cli("queue", "-c", str(conf), "list")
    assert listed.returncode == 0 and "QUEUED" in listed.stdout
    assert "Ng*** V** A*" in listed.stdout and "Nguyễn" not in listed.stdout
    assert "Nguyễn Văn An" in cli("queue", "-c", str(conf), "list", "--reveal").stdout
    event_id = listed.stdout.splitlines()[1].split()[-1]
    shown = json.loads(cli("queue", "-c", str(conf), "show", event_id).stdout)
    assert shown["payload"]["card"]["name"] == "Ng*** V** A*" and "Lê Lợi" not in json.dumps(shown, ensure_ascii=False)
    revealed = json.loads(cli("queue", "-c", str(conf), "show", "--reveal", event_id).stdout)
    assert revealed["payload"]["card"]["name"] == "Nguyễn Văn An"
    out = tmp_path / "export.jsonl"
    exported = cli("queue", "-c", str(conf), "export", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported.returncode == 0 and len(lines) >= 4 and lines[0]["card"]["name"] == "Nguyễn Văn An"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert cli("queue", "-c", str(conf), "show", "no-such-id").returncode == 1
    # retry: a delivered check-in becomes undelivered again
    from agent.outbox import Outbox
    box = Outbox(Path(conf.parent / "state" / "outbox.db"), station="counter-it")
    box.mark_delivered([event_id])
    depth = box.depth()
    box.close()
    retried = cli("queue", "-c", str(conf), "retry", event_id)
    assert retried.returncode == 0
    box = Outbox(Path(conf.parent / "state" / "outbox.db"), station="counter-it")
    assert box.depth() == depth + 1 and box.get(event_id).delivered_at is None
    box.close()


def test_doctor_names_what_to_fix(tmp_path):
    conf = tmp_path / "config.toml"
    (tmp_path / "state").mkdir(mode=0o755)
    conf.write_text(f"""
[station]
state_dir = "{tmp_path / 'state'}"
[camera]
source = "replay"
path = "{ROOT / 'agent' / 'samples' / 'frames'}"
[feedback]
backend = "console"
[mqtt]
host = "127.0.0.1"
port = 9
""")
    proc = cli("doctor", "-c", str(conf))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert any(line.startswith("ok   config") for line in lines)
    assert any(line.startswith("FIX  state") and "chmod 700" in line for line in lines)
    # replay on a station that sends to a broker: a recording, not patients
    assert any(line.startswith("FIX  camera") and 'source = "picamera2"' in line for line in lines), lines
    assert any(line.startswith("FIX  broker") and "unreachable" in line for line in lines)
    assert any(line.startswith("ok   gpio") for line in lines)
    assert lines[-1].endswith("problem(s) to fix")
    bench = tmp_path / "bench.toml"          # no broker: replaying frames is a bench test, fine
    bench.write_text(conf.read_text().split("[mqtt]")[0])
    lines = cli("doctor", "-c", str(bench)).stdout.splitlines()
    assert any(line.startswith("ok   camera") and "frame" in line for line in lines), lines
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nfps = 'x'\n")
    out = cli("doctor", "-c", str(bad))
    # README: doctor exits 2 when the config cannot be read
    assert out.returncode == 2 and out.stdout.startswith("FIX  config") and "camera.fps" in out.stdout


def test_a_station_replaying_the_demo_frames_to_a_broker_refuses_to_start(tmp_path):
    """The bundled demo patients must never reach a hospital as real check-ins: `run` exits 2 with
    one line, before opening anything."""
    conf = tmp_path / "config.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[camera]\nsource = "replay"\n'
                    '[mqtt]\nhost = "127.0.0.1"\nport = 9\ntls = false\nallow_insecure = true\n')
    proc = cli("run", "-c", str(conf), timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "bundled demo patients" in proc.stderr, proc.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
def test_feedback_test_plays_every_pattern(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("[feedback]\nbackend = \"console\"\n")
    proc = cli("feedback", "test", "-c", str(conf), timeout=120)
    from agent.feedback import Signal
    assert proc.returncode == 0
    for sig in Signal:
        assert sig.value in proc.stdout


@pytest.mark.slow
def test_snapshot_from_the_running_daemon_and_from_the_camera(daemon, tmp_path):
    import cv2
    conf, proc = daemon
    sock = conf.parent / "state" / "run" / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    out = tmp_path / "live.jpg"
    got = cli("snapshot", "-c", str(conf), str(out))
    assert got.returncode == 0 and "running daemon" in got.stdout, got.stderr
    img = cv2.imread(str(out))
    assert img is not None and img.shape[:2] == (450, 800)
    # garbage on the control socket gets an error, and the daemon carries on
    from agent.control import request
    with pytest.raises(RuntimeError, match="unknown command"):
        request(sock, "rm -rf /")
    assert cli("snapshot", "-c", str(conf), str(out)).returncode == 0
    proc.terminate()
    proc.wait(10)
    assert not sock.exists()
    # stopped: straight from the camera (a replay folder holding one presented card)
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(ROOT / "agent" / "samples" / "frames" / "005.jpg", one / "a.jpg")
    conf.write_text(conf.read_text().replace(str(ROOT / "agent" / "samples" / "frames"), str(one)))
    out2 = tmp_path / "cold.jpg"
    got = cli("snapshot", "-c", str(conf), str(out2))
    assert got.returncode == 0 and "daemon not running" in got.stdout
    img = cv2.imread(str(out2))
    green = (img[:, :, 1] > 150) & (img[:, :, 0] < 60) & (img[:, :, 2] < 60)
    assert green.sum() > 200  # the code is outlined


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1].strip() for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]


def _syscalls(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls in a systemd syscall group, nested groups expanded (systemd-analyze's own list)."""
    seen = set() if seen is None else seen
    text = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                          check=True).stdout
    out: set[str] = set()
    for line in text.splitlines()[1:]:
        line = line.strip()
        if line.startswith("@") and line not in seen:
            seen.add(line)
            out |= _syscalls(line, seen)
        elif line and not line.startswith("#"):
            out.add(line)
    return out


SANDBOX = """
import ctypes, os, sys
import pyseccomp as sc
allowed, errno_name, mdwe = sys.argv[1].split(","), sys.argv[2], sys.argv[3] == "yes"
if mdwe:  # MemoryDenyWriteExecute=yes, as the kernel's own switch (Linux 6.3+)
    assert ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0, "PR_SET_MDWE unsupported"
f = sc.SyscallFilter(defaction=sc.ERRNO(getattr(__import__("errno"), errno_name)))
for name in allowed:
    try:
        f.add_rule(sc.ALLOW, name)
    except Exception:  # not a system call on this architecture
        pass
f.load()
os.execv(sys.executable, [sys.executable, "-m", "agent", "run", "-c", sys.argv[4]])
"""


@pytest.mark.slow
def test_the_station_runs_under_the_units_sandbox(tmp_path):
    """The unit's SystemCallFilter (denied calls fail with its SystemCallErrorNumber), a /proc with
    only pids (ProcSubset=pid, ProtectProc=invisible) and MemoryDenyWriteExecute: OpenCV, zxing-cpp,
    numpy and SQLite still decode and record check-ins."""
    assert shutil.which("unshare") and os.geteuid() == 0, "needs root and unshare (util-linux) for a private /proc"
    allowed: set[str] = set()
    for value in _unit_values("SystemCallFilter"):
        groups = value.lstrip("~").split()
        calls = set().union(*(_syscalls(g) if g.startswith("@") else {g} for g in groups))
        allowed = allowed - calls if value.startswith("~") else allowed | calls
    assert "execve" in allowed and "mount" not in allowed and "setpriority" not in allowed
    (errno_name,) = _unit_values("SystemCallErrorNumber")
    assert _unit_values("ProcSubset") == ["pid"] and _unit_values("ProtectProc") == ["invisible"]
    mdwe = _unit_values("MemoryDenyWriteExecute") == ["yes"]
    conf = tmp_path / "c.toml"
    conf.write_text(f'[station]\nstate_dir = "{tmp_path / "state"}"\n[camera]\nsource = "replay"\n'
                    f'path = "{ROOT / "agent" / "samples" / "frames"}"\nfps = 20\nloop = true\n'
                    f'[checkin]\ncooldown_s = 0\n[feedback]\nbackend = "none"\n[outbox]\nmin_free_mb = 0\n')
    script = tmp_path / "sandbox.py"
    script.write_text(SANDBOX)
    inner = (f"mount -t proc -o subset=pid,hidepid=invisible proc /proc && test ! -e /proc/cpuinfo && "
             f"exec timeout -s TERM 12 '{sys.executable}' '{script}' '{','.join(sorted(allowed))}' {errno_name} "
             f"{'yes' if mdwe else 'no'} '{conf}'")
    proc = subprocess.run(["unshare", "--mount", "--pid", "--fork", "sh", "-c", inner], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode in (0, 124), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("check-in #") >= 3, proc.stderr[-2000:]
    assert "station stopped" in proc.stderr


def test_every_doctor_fix_line_says_what_to_do(tmp_path, broker):
    """Each way doctor can fail gives a remedy after the finding (the disk one included)."""
    import dataclasses

    from agent.admin import doctor
    from agent.config import FeedbackConfig, KeyboardOutputConfig
    from agent.outbox import Outbox
    from support.broker import Broker
    from support.daemon import replay_config

    state = tmp_path / "state"
    state.mkdir(mode=0o755)                                   # readable by others
    box = Outbox(state / "outbox.db", station="s")
    box.close()
    os.chmod(state / "outbox.db", 0o644)
    (state / "outbox.db.corrupt-20261124-080000").write_bytes(b"x")
    cfg = replay_config(state)
    cfg.outbox.min_free_mb = 10**9                            # no disk is that free
    checks = [doctor.check_config(tmp_path / "missing.toml")[0], *doctor.check_state(cfg),
              doctor.check_state(replay_config(tmp_path / "nowhere"))[0], doctor.check_clock(),
              doctor.check_camera(dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, source="v4l2",
                                                                                      device=63)), None),
              doctor.check_gpio(dataclasses.replace(cfg, feedback=FeedbackConfig(backend="gpio"))),
              doctor.check_unit()]
    cfg.mqtt = link_config(9)
    checks += doctor.check_broker(cfg)
    checks.append(doctor.check_replay(cfg, tmp_path / "c.toml"))
    cfg.mqtt = link_config(broker.port, tls=True, allow_insecure=False)    # TLS to a plain listener
    checks += doctor.check_broker(cfg)
    secured = Broker(tmp_path / "auth", users={"s": "right"}, acl="user s\ntopic read nothing/#\n").start()
    try:
        cfg.mqtt = link_config(secured.port, username="s", password="wrong")
        checks += doctor.check_session(cfg, timeout=5)
        cfg.mqtt = link_config(secured.port, username="s", password="right")
        checks += doctor.check_session(cfg, timeout=5)
    finally:
        secured.stop()
    cfg.keyboard = KeyboardOutputConfig(enabled=True, device=str(tmp_path / "hidg9"))
    checks += doctor.check_outputs(cfg)
    failed = [c for c in checks if not c.ok]
    names = {c.name for c in failed}
    assert {"config", "state", "outbox", "disk", "camera", "broker", "tls", "mqtt", "acl", "keyboard"} <= names, \
        [c.line() for c in failed]
    for c in failed:
        assert c.fix and c.line().endswith(c.fix), c.line()
    disk = next(c for c in failed if c.name == "disk")
    assert "free space" in disk.line() and "min_free_mb" in disk.line()


# --- the steps install.sh and the Debian package share -------------------------------------

def test_install_sh_and_the_package_share_their_steps_not_copies():
    steps = ROOT / "systemd" / "steps.sh"
    users = [p for p in [INSTALL, *sorted((ROOT / "packaging" / "deb").iterdir())] if "useradd" in p.read_text()]
    assert users == [] and "useradd" in steps.read_text(), users
    assert '. "$SRC/systemd/steps.sh"' in INSTALL.read_text()
    assert '. "$LIB/steps.sh"' in (ROOT / "packaging" / "deb" / "postinst").read_text()
    assert "systemd/steps.sh \"$LIB/steps.sh\"" in (ROOT / "scripts" / "build-deb").read_text()


def test_state_dir_step_never_follows_a_link(tmp_path):
    """Root makes the state directory only when it is missing, and leaves a link there alone."""
    def step(root):
        script = f'system() {{ echo "system: $*"; }}; ROOT={root}; . {ROOT / "systemd/steps.sh"}; sa_state_dir'
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    fresh = step(tmp_path / "fresh")
    assert "system: install -d -m 0700 -o scanner-agent -g scanner-agent" in fresh.stdout
    (tmp_path / "linked/var/lib").mkdir(parents=True)
    (tmp_path / "linked/var/lib/scanner-agent").symlink_to("/etc")
    linked = step(tmp_path / "linked")
    assert "system:" not in linked.stdout and "symbolic link: not touched" in linked.stderr


def test_a_prompt_espeak_cannot_make_never_fails_the_installation(tmp_path):
    """postinst and install.sh run under `set -e`: the voice (off by default) must not stop dpkg."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "espeak-ng").write_text("#!/bin/sh\nexit 1\n")
    (bin_ / "espeak-ng").chmod(0o755)
    script = (f'set -euo pipefail; PATH={bin_}:$PATH; run() {{ "$@"; }}; system() {{ "$@"; }}; '
              f'. {ROOT / "systemd/steps.sh"}; sa_prompts false {tmp_path / "prompts"}; echo installed')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "installed" in proc.stdout, proc.stdout + proc.stderr
    assert "voice prompts not all made" in proc.stdout


# --- 14: the USB gadget unit is sandboxed as far as configfs allows --------------------------------

GADGET_UNIT = Path(__file__).resolve().parents[1] / "systemd" / "scanner-agent-usb-gadget.service"


def _exposure(unit: Path) -> float:
    import re
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: install Debian's 'systemd' package (.ci/run does)"
    out = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


def test_the_usb_gadget_unit_is_sandboxed_and_verifies(tmp_path):
    import shutil
    import subprocess

    text = GADGET_UNIT.read_text()
    for line in ["ProtectSystem=strict", "ReadWritePaths=/sys/kernel/config", "ProtectKernelTunables=yes",
                 "ProtectKernelModules=yes", "CapabilityBoundingSet=\n", "PrivateNetwork=yes",
                 "RestrictAddressFamilies=AF_UNIX", "SystemCallFilter=@system-service", "NoNewPrivileges=yes",
                 "Requires=sys-kernel-config.mount", "ExecStartPre=-+"]:
        assert line in text, line
    assert _exposure(GADGET_UNIT) <= 2.5
    # verify: ExecStart must name an existing executable, so point it at a stand-in
    exe = tmp_path / "usb-gadget.sh"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / GADGET_UNIT.name
    unit.write_text(text.replace("/opt/scanner-agent/usb-gadget.sh", str(exe)))
    proc = subprocess.run([shutil.which("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_the_gadget_script_needs_no_capability(tmp_path):
    """What the unit leaves it: root's uid on root-owned files, no capability, no new privileges."""
    import subprocess

    (tmp_path / "etc/scanner-agent").mkdir(parents=True)
    (tmp_path / "etc/scanner-agent/config.toml").write_text('[station]\nid = "counter-07"\n')
    os.chmod(tmp_path / "etc/scanner-agent/config.toml", 0o640)
    (tmp_path / "sys/class/udc/fe980000.usb").mkdir(parents=True)
    script = GADGET_UNIT.parent / "usb-gadget.sh"
    for args in ((), ("--remove",)):
        done = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs",
                               "bash", str(script), "--root", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
