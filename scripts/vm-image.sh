# shellcheck shell=bash
# The Debian 12 arm64 virtual machine that scripts/test-vm boots: a disk image made from the cached
# root of scripts/arm64-root.sh (a copy of it, never the root itself) with Debian's arm64 kernel,
# systemd as PID 1, udev, systemd-networkd and an SSH server added from Debian's archive, then
# written to an ext4 image with mkfs.ext4 -d (no loop mount). Cached beside the root, rebuilt when
# the root, the package list or this file changes. Sourced after arm64-root.sh; the caller
# defines die and say. vm_image: build once; sets VM_DIR (disk.img, vmlinuz, initrd.img, ssh key).

VM_DIR=${SCANNER_AGENT_VM_CACHE:-$ROOTFS-vm}
# linux-image-arm64: the guest's kernel and modules (virtio, configfs, libcomposite, dummy_hcd);
# systemd-sysv: systemd as /sbin/init; udev and kmod: devices and modules; dbus: logind, systemctl;
# openssh-server: the test drives the guest over SSH; iproute2: the guest's network, for the logs
VM_PACKAGES="linux-image-arm64 systemd-sysv udev kmod dbus openssh-server iproute2"
VM_IMAGE_SIZE=${SCANNER_AGENT_VM_SIZE:-6G}

vm_image() {
    local want src tmp root mounted=()
    src=$(sed -n '/^vm_image()/,$p' "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
    want="$(cat "$ROOTFS/.scanner-agent-ready") $VM_PACKAGES $VM_IMAGE_SIZE $src"
    [[ $(cat "$VM_DIR/.ready" 2>/dev/null) == "$want" ]] && return 0
    say "building the VM's disk image in $VM_DIR (once; a few minutes under emulation)"
    local tb
    tb=$(date +%s)
    tmp=$VM_DIR.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp"
    root=$tmp/root
    cp -a "$ROOTFS" "$root"
    _vm_umount() { local i; for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done; mounted=(); }
    mount -t proc proc "$root/proc" && mounted+=("$root/proc")
    mount --bind /dev "$root/dev" && mounted+=("$root/dev")
    mount -t tmpfs tmpfs "$root/tmp" && mounted+=("$root/tmp")
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # apt inside the copy trusts what the host trusts (a proxy's CA, on some networks)
    cat /etc/ssl/certs/ca-certificates.crt > "$root/etc/ssl/certs/host-ca-certificates.crt"
    local in_copy=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
                   DEBIAN_FRONTEND=noninteractive)
    # the initramfs needs only what mounts the root (virtio-blk, ext4): udev loads the rest from it.
    # The default (MODULES=most) takes minutes under emulation, a modinfo for every module.
    mkdir -p "$root/etc/initramfs-tools/conf.d"
    echo MODULES=list > "$root/etc/initramfs-tools/conf.d/scanner-agent-vm.conf"
    printf '%s\n' virtio_pci virtio_blk ext4 >> "$root/etc/initramfs-tools/modules"
    # shellcheck disable=SC2086  # a list of packages
    if ! { "${in_copy[@]}" apt-get -q update && \
           "${in_copy[@]}" apt-get -q install -y --no-install-recommends $VM_PACKAGES; } > "$tmp/apt.log" 2>&1; then
        _vm_umount
        tail -20 "$tmp/apt.log" >&2
        die "installing the VM's packages ($VM_PACKAGES) from Debian failed (log: $tmp/apt.log)"
    fi
    "${in_copy[@]}" apt-get clean
    # the guest: its name, its root file system, a shell on the serial console, the network by DHCP
    # from QEMU's user networking, a persistent journal (the test reads it across reboots)
    echo station-vm > "$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tstation-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
    echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
    mkdir -p "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d" "$root/var/log/journal"
    printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %%I $TERM\n' \
        > "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf"
    printf '[Match]\nName=e*\n\n[Network]\nDHCP=ipv4\n' > "$root/etc/systemd/network/10-guest.network"
    "${in_copy[@]}" systemctl enable systemd-networkd.service >/dev/null 2>&1
    # what a test VM does not need at boot: the root's own broker (the station uses the host's),
    # Debian's timers (apt, man-db, scrub) that would compete for the emulated CPU
    local unit
    for unit in mosquitto.service apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
                fstrim.timer e2scrub_reap.service; do
        "${in_copy[@]}" systemctl mask "$unit" >/dev/null 2>&1 || true
    done
    # SSH: a key made for this image, root by key only
    rm -f "$root/etc/resolv.conf" "$root/etc/ssl/certs/host-ca-certificates.crt"
    ssh-keygen -q -t ed25519 -N "" -C scanner-agent-test-vm -f "$tmp/id_ed25519"
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$tmp/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    _vm_umount
    # the kernel and initramfs boot from outside the image (QEMU -kernel/-initrd)
    local kernel
    kernel=$(find "$root/boot" -name 'vmlinuz-*' | sort -V | tail -1)
    [[ -n $kernel ]] || die "no kernel in the VM's root ($root/boot)"
    cp "$kernel" "$tmp/vmlinuz"
    cp "$root/boot/initrd.img-${kernel##*/vmlinuz-}" "$tmp/initrd.img"
    echo "${kernel##*/vmlinuz-}" > "$tmp/kernel-version"
    mkfs.ext4 -q -F -L station -d "$root" "$tmp/disk.img" "$VM_IMAGE_SIZE" > "$tmp/mkfs.log" 2>&1 \
        || { cat "$tmp/mkfs.log" >&2; die "mkfs.ext4 -d could not make the disk image (e2fsprogs 1.43 or later?)"; }
    rm -rf "$root"
    echo "$want" > "$tmp/.ready"
    rm -rf "$VM_DIR"
    mv "$tmp" "$VM_DIR"
    say "disk image ready: kernel $(cat "$VM_DIR/kernel-version"), $(du -h --apparent-size "$VM_DIR/disk.img" | cut -f1) ($(du -h "$VM_DIR/disk.img" | cut -f1) used) in $(( $(date +%s) - tb )) s"
}
