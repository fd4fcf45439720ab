#!/usr/bin/env bash
# Make the hospital's private CA, the broker's TLS certificate and (optionally) client
# certificates for stations, with the ownership Debian's Mosquitto 2 needs: it drops root to the
# 'mosquitto' user before it reads its certificates, so the broker's key is root:mosquitto 0640.
#   sudo examples/mosquitto/make-ca.sh /etc/mosquitto/certs broker.hospital.lan [counter-01 ...]
# Writes in DIR (kept when already there, so running it again only adds what is missing):
#   hospital-ca.key   the CA's private key, root 0600: needed only to make more certificates
#   hospital-ca.crt   the CA, 0644: to every station as /etc/scanner-agent/ca.crt ([mqtt] ca_file)
#   HOST.crt          the broker's certificate for HOST (the name stations use in [mqtt] host), 0644
#   HOST.key          its key, root:mosquitto 0640 (readable by the broker, nobody else)
#   STATION.crt/.key  client certificates (CN = station id) for require_certificate; copy each to
#                     its station, key owned by scanner-agent, mode 0600
set -euo pipefail
dir=${1:?usage: make-ca.sh DIR BROKER_HOST [STATION_ID...]}
host=${2:?usage: make-ca.sh DIR BROKER_HOST [STATION_ID...]}
shift 2
days=${CA_DAYS:-3650}
umask 077
[[ -d "$dir" ]] || install -d -m 0755 "$dir"   # the broker must reach its files in it
cd "$dir"
group=root
getent group mosquitto >/dev/null && group=mosquitto
if [[ ! -e hospital-ca.key ]]; then
    openssl req -x509 -newkey rsa:3072 -nodes -keyout hospital-ca.key -out hospital-ca.crt -days "$days" \
        -subj "/CN=scanner-agent hospital CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
chmod 0600 hospital-ca.key
chmod 0644 hospital-ca.crt
sign() {  # sign NAME SUBJECT_ALT_NAME EXTENDED_KEY_USAGE
    local name=$1 ext
    [[ -e "$name.crt" ]] && return 0
    ext=$(mktemp)
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$2" "$3" >"$ext"
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA hospital-ca.crt -CAkey hospital-ca.key -CAcreateserial \
        -out "$name.crt" -days "$days" -extfile "$ext" 2>/dev/null
    rm -f "$name.csr" "$ext"
    chmod 0644 "$name.crt"
    echo "wrote $dir/$name.crt and $name.key" >&2
}
if [[ $host =~ ^[0-9.]+$ ]]; then san="IP:$host"; else san="DNS:$host"; fi
sign "$host" "$san" serverAuth
chown "root:$group" "$host.key"
chmod 0640 "$host.key"
for station in "$@"; do
    sign "$station" "DNS:$station" clientAuth
    chmod 0600 "$station.key"
done
echo "CA for the stations' [mqtt] ca_file: $dir/hospital-ca.crt (copy it to /etc/scanner-agent/ca.crt)" >&2
