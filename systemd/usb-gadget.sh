#!/usr/bin/env bash
# USB gadget for scanner-agent: one composite device with a HID boot keyboard (/dev/hidg0) and a
# CDC ACM serial port (/dev/ttyGS0), so the counter PC sees the station like a USB 2D scanner.
# Raspberry Pi 4/5 (USB-C port) and Zero 2 W (OTG port), through the kernel's libcomposite configfs.
# Needs dtoverlay=dwc2 in /boot/firmware/config.txt and modules-load=dwc2 on the kernel command line
# (this script says so; it never edits boot files).
#
#   sudo systemd/usb-gadget.sh [--serial ID]    create (idempotent) and bind to the USB device controller
#   sudo systemd/usb-gadget.sh --remove         unbind and remove
#   systemd/usb-gadget.sh --root DIR ...        work on DIR/sys/kernel/config (tests: a plain folder)
set -euo pipefail

ROOT="" REMOVE=0 SERIAL=""
while (($#)); do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --remove) REMOVE=1 ;;
        --serial) SERIAL=${2:?--serial needs a value}; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "usb-gadget.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

CONFIGFS=$ROOT/sys/kernel/config
G=$CONFIGFS/usb_gadget/scanner-agent
UDC_CLASS=$ROOT/sys/class/udc
# The serial number: the station id from the config, else the host name (letters, digits, - _ . only).
if [[ -z $SERIAL ]]; then
    CONF=$ROOT/etc/scanner-agent/config.toml
    SERIAL=$({ sed -n 's/^[[:space:]]*id[[:space:]]*=[[:space:]]*"\([A-Za-z0-9_.-]*\)".*/\1/p' "$CONF" 2>/dev/null || true; } | head -1)
    SERIAL=${SERIAL:-$(hostname 2>/dev/null || echo scanner-agent)}
fi
SERIAL=$(printf '%s' "$SERIAL" | tr -cd 'A-Za-z0-9_.-' | cut -c1-64)

boot_hint() {
    echo "usb-gadget: no USB device controller (UDC). On a Raspberry Pi add 'dtoverlay=dwc2' to" >&2
    echo "  /boot/firmware/config.txt and 'modules-load=dwc2' to /boot/firmware/cmdline.txt, then reboot." >&2
}

if ((REMOVE)); then
    [[ -d $G ]] || { echo "usb-gadget: nothing to remove"; exit 0; }
    [[ -e $G/UDC ]] && echo "" > "$G/UDC" 2>/dev/null || true
    rm -f "$G/configs/c.1/hid.usb0" "$G/configs/c.1/acm.usb0"
    for d in "$G/configs/c.1/strings/0x409" "$G/configs/c.1" "$G/functions/hid.usb0" "$G/functions/acm.usb0" \
             "$G/strings/0x409"; do
        [[ -d $d ]] || continue
        if [[ -n $ROOT ]]; then rm -rf "$d"; else rmdir "$d"; fi
    done
    if [[ -n $ROOT ]]; then rm -rf "$G"; else rmdir "$G"; fi
    echo "usb-gadget: removed"
    exit 0
fi

if [[ -z $ROOT ]]; then
    modprobe libcomposite 2>/dev/null || true
    mountpoint -q "$CONFIGFS" || mount -t configfs none "$CONFIGFS"
fi
[[ -d $CONFIGFS/usb_gadget ]] || mkdir -p "$CONFIGFS/usb_gadget"

put() {  # write a value only when it differs (idempotent; configfs refuses some writes while bound)
    local file=$1 value=$2
    [[ -e $file && $(cat "$file" 2>/dev/null) == "$value" ]] && return 0
    printf '%s\n' "$value" > "$file"
}

mkdir -p "$G/strings/0x409" "$G/configs/c.1/strings/0x409" "$G/functions/hid.usb0" "$G/functions/acm.usb0"
put "$G/idVendor" 0x1d6b                 # Linux Foundation
put "$G/idProduct" 0x0104                # Multifunction Composite Gadget
put "$G/bcdDevice" 0x0100
put "$G/bcdUSB" 0x0200
put "$G/strings/0x409/manufacturer" "scanner-agent"
put "$G/strings/0x409/product" "scanner-agent check-in station (keyboard + serial)"
put "$G/strings/0x409/serialnumber" "$SERIAL"
put "$G/configs/c.1/strings/0x409/configuration" "keyboard + serial"
put "$G/configs/c.1/MaxPower" 250

# HID boot keyboard: protocol 1, subclass 1 (boot), 8-byte reports, the standard report descriptor
put "$G/functions/hid.usb0/protocol" 1
put "$G/functions/hid.usb0/subclass" 1
put "$G/functions/hid.usb0/report_length" 8
printf '\x05\x01\x09\x06\xa1\x01\x05\x07\x19\xe0\x29\xe7\x15\x00\x25\x01\x75\x01\x95\x08\x81\x02\x95\x01\x75\x08\x81\x03\x95\x05\x75\x01\x05\x08\x19\x01\x29\x05\x91\x02\x95\x01\x75\x03\x91\x03\x95\x06\x75\x08\x15\x00\x25\x65\x05\x07\x19\x00\x29\x65\x81\x00\xc0' \
    > "$G/functions/hid.usb0/report_desc"

for f in hid.usb0 acm.usb0; do
    [[ -e $G/configs/c.1/$f ]] || ln -s "$G/functions/$f" "$G/configs/c.1/$f"
done

udc=$(ls "$UDC_CLASS" 2>/dev/null | head -1 || true)
if [[ -z $udc ]]; then
    boot_hint
    echo "usb-gadget: configured, not bound"
    exit 0
fi
current=$(cat "$G/UDC" 2>/dev/null || true)
[[ $current == "$udc" ]] || echo "$udc" > "$G/UDC"
echo "usb-gadget: bound to $udc (keyboard /dev/hidg0, serial /dev/ttyGS0, serial number $SERIAL)"
