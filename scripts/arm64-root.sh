# shellcheck shell=bash
# The cached Debian 12 arm64 root that scripts/test-arm64 (the test suite) and scripts/test-deb-arm64
# (the package) run in, under qemu-user-static and binfmt_misc. Sourced; the caller defines
# a die function. arm64_root: check the host, build the root once.

ROOTFS=${SCANNER_AGENT_ARM64_ROOT:-/var/cache/scanner-agent/arm64-bookworm}
# The CPU qemu-user emulates (given to every command in the root as QEMU_CPU): a Raspberry Pi 4's
# Cortex-A72, the oldest core a station has. qemu's default ("max") has SVE, which no Pi has: numpy
# and OpenCV then take SVE code paths a station never runs, and emulation renders a camera frame
# about 2.8 times slower (14 s against 5 s for three frames).
QEMU_CPU_PI=${SCANNER_AGENT_QEMU_CPU:-cortex-a72}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# what the tests need from Debian, as on the host (.ci/run); man-db: systemd-analyze verify follows Documentation=;
# alsa-utils, espeak-ng, sox: the voice prompts (aplay to ALSA's null device, the default set, its level);
# pcscd, vsmartcard-vpcd: the chip reader's tests (a private pcscd with a virtual reader); gcc, libc6-dev,
# python3-dev, libpcsclite-dev: pyscard, which PyPI has as source only, is built in the root's venv
PACKAGES=python3,python3-venv,ca-certificates,mosquitto,openssl,systemd,util-linux,libseccomp2,procps,man-db,alsa-utils,espeak-ng,sox,pcscd,vsmartcard-vpcd,gcc,libc6-dev,python3-dev,libpcsclite-dev

arm64_root() {
    # 1. what the host must have: root, debootstrap, qemu-user-static, an aarch64 entry in binfmt_misc
    [[ $EUID -eq 0 ]] || die "run as root (debootstrap, chroot and binfmt_misc need it)"
    if ! command -v debootstrap >/dev/null || [[ ! -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P && ! -x /usr/bin/qemu-aarch64-static ]]; then
        die "debootstrap or qemu-user-static missing: apt-get install debootstrap qemu-user-static binfmt-support"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
            || die "binfmt_misc is not available on this machine (cannot mount /proc/sys/fs/binfmt_misc)"
    fi
    if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "no aarch64 interpreter registered in binfmt_misc (update-binfmts --enable qemu-aarch64)"

    # 2. the Debian 12 arm64 root, once (again when the package list changes)
    if [[ $(cat "$ROOTFS/.scanner-agent-ready" 2>/dev/null) != "$PACKAGES" ]]; then
        echo "test-arm64: building a Debian 12 arm64 root in $ROOTFS (once; a few minutes)"
        rm -rf "$ROOTFS.tmp"
        mkdir -p "$(dirname "$ROOTFS")"
        debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" bookworm "$ROOTFS.tmp" "$MIRROR" \
            > "$ROOTFS.log" 2>&1 || { tail -20 "$ROOTFS.log" >&2; die "debootstrap failed (log: $ROOTFS.log)"; }
        rm -rf "$ROOTFS"
        mv "$ROOTFS.tmp" "$ROOTFS"
        echo "$PACKAGES" > "$ROOTFS/.scanner-agent-ready"
    fi
    # debootstrap's minbase makes no /etc/hosts: 'localhost' (the test brokers' TLS name) must resolve
    grep -qs '^127\.0\.0\.1[[:space:]].*localhost' "$ROOTFS/etc/hosts" \
        || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >> "$ROOTFS/etc/hosts"
}
