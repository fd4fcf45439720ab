#!/usr/bin/env bash
# Make the broker's password file: one user per station (user name = station id), the
# consumers' user "hospital" and IT's "it", each with a random password printed once.
#   sudo examples/mosquitto/make-passwd.sh /etc/mosquitto/scanner-agent.passwd counter-01 counter-02 ...
set -euo pipefail
file=${1:?usage: make-passwd.sh PASSWD_FILE STATION_ID...}
shift
install -m 0640 /dev/null "$file.new"
for user in "$@" hospital it; do
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    mosquitto_passwd -b "$file.new" "$user" "$pw"
    printf '%s\t%s\n' "$user" "$pw"
done
mv "$file.new" "$file"
echo "wrote $file: put each station's password in its /etc/scanner-agent/config.toml ([mqtt] password)" >&2
