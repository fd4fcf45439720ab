#!/usr/bin/env bash
# Install scanner-agent on Raspberry Pi OS (Bookworm / Trixie) as a systemd service.
# Idempotent: a second run changes nothing. Never overwrites an existing config.
#
#   sudo systemd/install.sh                     install or upgrade, enable and (re)start
#   sudo systemd/install.sh --no-start          install and enable, do not start (edit the config first)
#   sudo systemd/install.sh --uninstall         remove the service and program; keep state and config
#   sudo systemd/install.sh --uninstall --purge also delete config and state (undelivered check-ins!): asks
#   systemd/install.sh --dry-run                print what would change, change nothing
#   systemd/install.sh --root DIR               install under DIR (tests, image builds): no user, no systemctl
#   sudo systemd/install.sh --usb-gadget        also the USB gadget (keyboard + serial to the counter PC)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT="" DRY=0 UNINSTALL=0 PURGE=0 YES=0 START=1 GADGET=0
PIP_ARGS=${SCANNER_AGENT_PIP_ARGS:-}
while (($#)); do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --dry-run) DRY=1 ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --yes) YES=1 ;;
        --no-start) START=0 ;;
        --usb-gadget) GADGET=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n $ROOT ]] && ROOT=$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)

SERVICE=scanner-agent
PREFIX=$ROOT/opt/scanner-agent
VENV=$PREFIX/venv
UNIT=$ROOT/etc/systemd/system/$SERVICE.service
GADGET_UNIT=$ROOT/etc/systemd/system/$SERVICE-usb-gadget.service
CONF_DIR=$ROOT/etc/scanner-agent
STATE=$ROOT/var/lib/scanner-agent
STAMP=$PREFIX/installed-from
# the command on the PATH, as the docs run it (a link to the venv's, named as on the system)
LINK=$ROOT/usr/local/bin/scanner-agent
LINK_TARGET=/opt/scanner-agent/venv/bin/scanner-agent
CHANGED=0

say() { echo "scanner-agent: $*"; }
# run: a change to files under ROOT; system: a change to the live system (skipped with --root)
run() {
    CHANGED=1
    if ((DRY)); then echo "  would run: $*"; else echo "  $*"; "$@"; fi
}
system() {
    if [[ -n $ROOT ]]; then echo "  skipped (--root): $*"; CHANGED=1; return 0; fi
    run "$@"
}

# the steps the Debian package's maintainer scripts share (user, venv, config check)
# shellcheck source=systemd/steps.sh
. "$SRC/systemd/steps.sh"

if ((!DRY)) && [[ -z $ROOT ]] && ((EUID != 0)); then
    echo "install.sh: run as root (sudo), or use --dry-run / --root DIR" >&2
    exit 2
fi

do_uninstall() {
    if [[ -z $ROOT ]] && command -v systemctl >/dev/null && systemctl list-unit-files "$SERVICE.service" >/dev/null 2>&1; then
        system systemctl disable --now "$SERVICE.service" || true
    fi
    if [[ -e $GADGET_UNIT ]]; then
        [[ -n $ROOT ]] || system systemctl disable --now "$SERVICE-usb-gadget.service" || true
        run rm -f "$GADGET_UNIT"
    fi
    [[ -e $UNIT ]] && run rm -f "$UNIT" && system systemctl daemon-reload
    [[ -e $PREFIX ]] && run rm -rf "$PREFIX"
    [[ -L $LINK && $(readlink "$LINK") == "$LINK_TARGET" ]] && run rm -f "$LINK"
    if ((PURGE)); then
        if ((!YES)); then
            [[ -t 0 ]] || { echo "install.sh: --purge deletes undelivered check-ins; add --yes to confirm" >&2; exit 2; }
            read -r -p "Delete $STATE (undelivered check-ins!) and $CONF_DIR? Type DELETE: " answer
            [[ $answer == DELETE ]] || { say "purge cancelled"; exit 1; }
        fi
        [[ -e $STATE ]] && run rm -rf "$STATE"
        [[ -e $CONF_DIR ]] && run rm -rf "$CONF_DIR"
    else
        say "kept $STATE (check-in outbox) and $CONF_DIR (config); --purge deletes them"
    fi
}

do_install() {
    # 1. the service user, in the camera and GPIO groups, and its state directory
    [[ -n $ROOT ]] || { sa_user; sa_state_dir; }

    # 2-3. a virtual environment that also sees the OS's picamera2 and libcamera, with the package
    # (from PyPI and this checkout), reinstalled only when the source changed
    local want
    want="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/agent/__init__.py") $(cd "$SRC" && \
        find agent pyproject.toml -type f ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-40)"
    if [[ ! -x $VENV/bin/python || ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
        # shellcheck disable=SC2086  # PIP_ARGS is a list of options
        sa_venv "$VENV" $PIP_ARGS "$SRC"
        ((DRY)) || echo "$want" > "$STAMP"
        PACKAGE_CHANGED=1
    fi

    # 3b. scanner-agent on the PATH (/usr/local/bin), never over a file that is not our link
    if [[ ! -L $LINK || $(readlink "$LINK") != "$LINK_TARGET" ]]; then
        if [[ -e $LINK || -L $LINK ]]; then
            say "$LINK exists and is not a link to $LINK_TARGET: left as it is (run $LINK_TARGET)"
        else
            run mkdir -p "$(dirname "$LINK")"
            run ln -s "$LINK_TARGET" "$LINK"
        fi
    fi

    # 4. the unit
    if ! cmp -s "$SRC/systemd/$SERVICE.service" "$UNIT"; then
        run install -D -m 0644 "$SRC/systemd/$SERVICE.service" "$UNIT"
        system systemctl daemon-reload
        PACKAGE_CHANGED=1
    fi

    # 5. a config template, never over an existing config
    if [[ -e $CONF_DIR/config.toml ]]; then
        :
    else
        run install -D -m 0640 "$SRC/config/config.toml" "$CONF_DIR/config.toml"
        [[ -n $ROOT ]] || sa_config_mode
        say "edit $CONF_DIR/config.toml (station id, broker, CA), then: sudo systemctl restart $SERVICE"
    fi

    # 5a. the default voice prompts, never over a file there
    sa_prompts "$VENV/bin/python" "$CONF_DIR/prompts"

    # 5b. the USB gadget, only when asked; the boot settings are the admin's to make
    if ((GADGET)); then
        if ! cmp -s "$SRC/systemd/usb-gadget.sh" "$PREFIX/usb-gadget.sh"; then
            run install -D -m 0755 "$SRC/systemd/usb-gadget.sh" "$PREFIX/usb-gadget.sh"
        fi
        local rules=$ROOT/etc/udev/rules.d/70-scanner-agent-gadget.rules
        local want_rules=$SA_GADGET_RULES
        if [[ ! -f $rules || $(cat "$rules") != "$want_rules" ]]; then
            CHANGED=1
            if ((DRY)); then echo "  would write $rules"; else
                mkdir -p "$(dirname "$rules")"; printf '%s\n' "$want_rules" > "$rules"; echo "  wrote $rules"
            fi
        fi
        if ! cmp -s "$SRC/systemd/$SERVICE-usb-gadget.service" "$GADGET_UNIT"; then
            run install -D -m 0644 "$SRC/systemd/$SERVICE-usb-gadget.service" "$GADGET_UNIT"
            system systemctl daemon-reload
        fi
        if [[ -z $ROOT ]]; then
            systemctl is-enabled --quiet "$SERVICE-usb-gadget" 2>/dev/null || system systemctl enable --now "$SERVICE-usb-gadget"
        fi
        grep -qs '^dtoverlay=dwc2' "$ROOT/boot/firmware/config.txt" || \
            say "USB gadget: add 'dtoverlay=dwc2' to /boot/firmware/config.txt and 'modules-load=dwc2' after 'rootwait' in /boot/firmware/cmdline.txt, then reboot (not done for you)"
    fi

    # 6. enabled, and running the installed version
    if [[ -z $ROOT ]]; then
        systemctl is-enabled --quiet "$SERVICE" 2>/dev/null || system systemctl enable "$SERVICE"
        if ((START)); then
            if ((${PACKAGE_CHANGED:-0})) && ! ((DRY)) && ! sa_config_ok "$VENV/bin/scanner-agent"; then
                say "not (re)started: 'scanner-agent config check' fails; fix $CONF_DIR/config.toml, then: sudo systemctl restart $SERVICE"
            elif ((${PACKAGE_CHANGED:-0})); then
                system systemctl restart "$SERVICE"
            elif ! systemctl is-active --quiet "$SERVICE"; then
                system systemctl start "$SERVICE"
            fi
        fi
    else
        echo "  skipped (--root): systemctl enable $SERVICE$( ((START)) && echo " and start")"
    fi
}

if ((UNINSTALL)); then do_uninstall; else do_install; fi
if ((CHANGED)); then
    say "$( ((DRY)) && echo "dry run: nothing changed" || echo done)"
else
    say "no changes: already installed and up to date"
fi
