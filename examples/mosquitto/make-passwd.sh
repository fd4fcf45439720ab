#!/usr/bin/env bash
# Make the broker's password file: one user per station (user name = station id), the
# consumers' user "hospital" and IT's "it", each with a random password printed once.
#   sudo examples/mosquitto/make-passwd.sh /etc/mosquitto/scanner-agent.passwd counter-01 counter-02 ...
# The file is root:mosquitto 0640: Debian's broker reads it as the 'mosquitto' user, nobody else can.
set -euo pipefail
file=${1:?usage: make-passwd.sh PASSWD_FILE STATION_ID...}
shift
group=root
getent group mosquitto >/dev/null && group=mosquitto
install -m 0640 -g "$group" /dev/null "$file.new"
for user in "$@" hospital it; do
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    mosquitto_passwd -b "$file.new" "$user" "$pw"
    printf '%s\t%s\n' "$user" "$pw"
done
chgrp "$group" "$file.new"   # mosquitto_passwd rewrites the file: set the group again
chmod 0640 "$file.new"
mv "$file.new" "$file"
echo "wrote $file: put each station's password in its /etc/scanner-agent/config.toml ([mqtt] password)" >&2
