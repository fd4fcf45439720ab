# shellcheck shell=bash
# The install steps that systemd/install.sh (a git checkout) and the Debian package's maintainer
# scripts (scripts/build-deb: /usr/lib/scanner-agent/steps.sh) share, so that both make the same
# user, virtual environment and service. Sourced, not run. The caller defines two functions:
#   run CMD...     a change to files (install.sh: printed, skipped with --dry-run)
#   system CMD...  a change to the live system: users, systemctl (install.sh: skipped with --root)
# and may set ROOT (install.sh --root DIR; empty on a live system).

SA_USER=scanner-agent
SA_STATE=/var/lib/scanner-agent
SA_CONF=/etc/scanner-agent/config.toml
# udev: the USB gadget's keyboard and serial devices, for the service's group
# shellcheck disable=SC2034  # used by install.sh and scripts/build-deb
SA_GADGET_RULES='KERNEL=="hidg[0-9]*", GROUP="scanner-agent", MODE="0660"
KERNEL=="ttyGS[0-9]*", GROUP="scanner-agent", MODE="0660"'

# The service user, in the camera (video), GPIO (gpio) and sound (audio) groups. The groups are made when the OS
# has none (a Debian that is not Raspberry Pi OS): the unit's SupplementaryGroups needs them to start.
sa_user() {
    getent passwd "$SA_USER" >/dev/null || system useradd --system --user-group --no-create-home \
        --home-dir "$SA_STATE" --shell /usr/sbin/nologin "$SA_USER"
    local group
    for group in video gpio audio; do
        getent group "$group" >/dev/null || system groupadd --system "$group"
        id -nG "$SA_USER" 2>/dev/null | grep -qw "$group" || system usermod -aG "$group" "$SA_USER"
    done
}

# The state directory (the check-in outbox), 0700 and the service's. Made only when missing: root
# never changes what is inside (the service account may have put links there).
sa_state_dir() {
    local dir=${ROOT:-}$SA_STATE
    [[ -L $dir ]] && { echo "scanner-agent: $dir is a symbolic link: not touched" >&2; return 0; }
    [[ -d $dir ]] || system install -d -m 0700 -o "$SA_USER" -g "$SA_USER" "$dir"
}

# The config: readable by the service (group), not by other users (it may hold the broker password).
sa_config_mode() {
    local conf=${ROOT:-}$SA_CONF
    [[ -f $conf && ! -L $conf ]] || return 0
    system chown "root:$SA_USER" "$(dirname "$conf")" "$conf"
    system chmod 0750 "$(dirname "$conf")"
    system chmod 0640 "$conf"
}

# sa_venv DIR PIP-ARGS...: a virtual environment at DIR that also sees the OS's picamera2 and
# libcamera (--system-site-packages), with pip install PIP-ARGS in it.
sa_venv() {
    local dir=$1
    shift
    [[ -x $dir/bin/python ]] || run python3 -m venv --system-site-packages "$dir"
    PIP_ROOT_USER_ACTION=ignore run "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}

# sa_config_ok: the installed config loads and validates, as the service would read it (run as the
# service user). A (re)start waits for this: a station with a broken config keeps running what it ran.
sa_config_ok() {
    local exe=${1:-/opt/scanner-agent/venv/bin/scanner-agent}
    runuser -u "$SA_USER" -- "$exe" config check "$SA_CONF" >/dev/null 2>&1
}

# sa_prompts PYTHON DIR: the default voice prompts (espeak-ng's Vietnamese voice) in DIR; files
# already there (a hospital's own recordings) are kept. No espeak-ng: said, the station works
# without (the voice is off by default, and a missing prompt is a warning, never a fault).
sa_prompts() {
    local python=$1 dir=$2
    if ! command -v espeak-ng >/dev/null; then
        echo "scanner-agent: no espeak-ng: voice prompts not made (apt install espeak-ng alsa-utils, then run this again)"
    elif ! "$python" -m agent.feedback.prompts --check "$dir" 2>/dev/null; then
        # a prompt espeak-ng cannot make never fails the installation (set -e in the callers)
        run "$python" -m agent.feedback.prompts "$dir" ||
            echo "scanner-agent: voice prompts not all made in $dir; the station works without (run this again, or put recordings there)"
    fi
}
